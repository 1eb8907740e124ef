from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pair.core.errors import Invalid, NotFound
from pair.reporting.engine import evaluate
from pair.reporting.loader import MODULE_DIR, get_module, modules, parse_module

GOLDEN = yaml.safe_load((Path(__file__).parent / "data" / "golden.yaml").read_text())


@pytest.mark.parametrize("case", GOLDEN["cases"], ids=lambda c: c["name"])
def test_golden(case: dict[str, Any]) -> None:
    ev = evaluate(get_module(case["module"]), case["inputs"])
    if "endpoint" in case:
        assert ev.endpoint == case["endpoint"]
    for key, value in case.get("computed", {}).items():
        assert ev.computed[key] == value
    if "impression" in case:
        assert ev.sections["impression"] == "".join(case["impression"])
    if "findings_contains" in case:
        assert case["findings_contains"] in ev.sections["findings"]


def test_every_rsna_ct_category_and_tag_is_covered() -> None:
    cases = [c for c in GOLDEN["cases"] if c["module"] == "rsna-ct-covid" and "impression" in c]
    tags = {"".join(c["impression"])[-10:] for c in cases}
    assert {"[Cov19Typ]", "[Cov19Ind]", "[Cov19Aty]", "[Cov19Neg]"} <= tags
    m = get_module("rsna-ct-covid")
    for category, sentence in GOLDEN["sentences"].items():
        rendered = m.endpoint(category).sections["impression"]
        assert rendered[0].text == sentence  # type: ignore[union-attr]


@pytest.mark.parametrize("value", [str(i) for i in range(7)])
def test_corads_is_its_own_element(value: str) -> None:
    ev = evaluate(get_module("corads"), {"corads": value})
    assert ev.values == {"corads": value}
    assert ev.sections["impression"].startswith(f"CO-RADS {value}:")
    assert ev.endpoint == "corads"
    assert get_module("corads").element("corads").cde == "PAIR-RDE9"


def test_relevance_and_requirement() -> None:
    m = get_module("rsna-ct-covid")
    base = GOLDEN["ct_base"]
    ev = evaluate(m, {**base, "ggo_side": "left"})  # stale value of a hidden field
    assert "ggo_side" not in ev.relevant and ev.ignored == ["ggo_side"]
    assert "ggo_side" not in ev.values
    ev = evaluate(
        m,
        {
            **base,
            "ggo": "present",
            "ggo_side": "left",
            "ggo_location": "central",
            "ggo_rounded": "absent",
        },
    )
    assert {"ggo_side", "ggo_location", "ggo_rounded"} <= set(ev.required)
    assert "override_reason" not in ev.relevant
    assert ev.values["insert_coding"] == "yes"  # default choice


def test_invalid_inputs_list_every_problem() -> None:
    m = get_module("rsna-ct-covid")
    with pytest.raises(Invalid) as err:
        evaluate(
            m, {"ggo": "maybe", "bogus": 1, "category": "typical", "override_category": "typical"}
        )
    problems = {p["element"]: p["message"] for p in err.value.details}
    assert problems["ggo"] == "value 'maybe' is not allowed; allowed: absent, present"
    assert problems["bogus"].startswith("unknown element; known: ggo, ggo_side")
    assert problems["category"] == "is computed and cannot be entered"
    with pytest.raises(Invalid) as err:
        evaluate(m, {"ggo": "present", "override_category": "typical"})
    missing = {p["element"] for p in err.value.details}
    assert {
        "ggo_side",
        "ggo_location",
        "ggo_rounded",
        "consolidation",
        "override_reason",
    } <= missing
    assert "ggo_distribution" not in missing  # optional
    assert "required (Side of ground glass opacity)" in err.value.message
    sev = get_module("ct-severity-25")
    with pytest.raises(Invalid) as err:
        evaluate(sev, {"rul": 6, "rml": -1, "rll": 2.5, "lul": True, "lll": "x"})
    problems = {p["element"]: p["message"] for p in err.value.details}
    assert problems == {
        "rul": "6 is above the maximum 5",
        "rml": "-1 is below the minimum 0",
        "rll": "expected an integer",
        "lul": "expected an integer",
        "lll": "expected an integer",
    }
    assert evaluate(sev, {"rul": "1", "rml": 0, "rll": 0, "lul": 0, "lll": 0}).computed == {
        "total": 1
    }
    cxr = get_module("rsna-cxr-covid")
    with pytest.raises(Invalid, match="distribution: required"):
        evaluate(cxr, {"opacities": "present"})
    with pytest.raises(Invalid, match=r"atypical_features: values \['x'\] are not allowed"):
        evaluate(cxr, {"opacities": "absent", "atypical_features": ["x"]})
    with pytest.raises(Invalid, match="choices must not repeat"):
        evaluate(cxr, {"opacities": "absent", "atypical_features": ["cavity", "cavity"]})
    with pytest.raises(Invalid, match="must be an object"):
        evaluate(cxr, ["opacities"])  # type: ignore[arg-type]


def test_unknown_module() -> None:
    with pytest.raises(NotFound, match="No reporting module 'nope'; available: corads"):
        get_module("nope")


def _module_data(name: str = "rsna-ct-covid@1.0.0") -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((MODULE_DIR / f"{name}.yaml").read_text())
    return data


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda d: d["elements"][1].update(relevant_if={"equal": ["gg0", "present"]}),
            "element ggo_side.relevant_if: condition refers to unknown element 'gg0'",
        ),
        (
            lambda d: d["elements"][1].update(relevant_if={"equal": ["ggo", "yes"]}),
            "ggo has no choice 'yes'; allowed: absent, present",
        ),
        (
            lambda d: d["elements"][1].update(relevant_if={"eq": ["ggo", "present"]}),
            "unknown condition 'eq'",
        ),
        (
            lambda d: d["elements"][0].update(cde="RDE99999"),
            "element ggo: CDE 'RDE99999' is not in the catalog",
        ),
        (
            lambda d: d["elements"][0]["choices"][1].update(cde="RDE1360.9"),
            "choice 'present' names 'RDE1360.9', which is not a value of RDE1360",
        ),
        (
            lambda d: d["elements"][0].update(cde="PAIR-RDE19"),
            "CDE PAIR-RDE19 has type integer, not suitable for a choice element",
        ),
        (lambda d: d["elements"][0].pop("cde"), "coded elements must name a CDE"),
        (lambda d: d["rules"]["branches"][0].update(endpoint="typo"), "unknown endpoint 'typo'"),
        (
            lambda d: d["endpoints"][0]["sections"]["impression"].append({"value": "nope"}),
            "endpoint typical.impression: inserts unknown element 'nope'",
        ),
        (lambda d: d.update(version="1.0"), "version: String should match pattern"),
        (lambda d: d["elements"].append(dict(d["elements"][0])), "element id 'ggo' is used twice"),
    ],
)
def test_module_errors_are_precise(mutate: Any, message: str) -> None:
    data = _module_data()
    mutate(data)
    with pytest.raises(Invalid) as err:
        parse_module(data, "test.yaml")
    assert message in err.value.message
    assert err.value.message.startswith("test.yaml is not a valid module:")


def test_expression_safety() -> None:
    data = _module_data("ct-severity-25@1.0.0")
    data["elements"][-1]["expression"] = "__import__('os').system('true')"
    with pytest.raises(Invalid, match="only the functions"):
        parse_module(data)
    data["elements"][-1]["expression"] = "rul + later"
    with pytest.raises(Invalid, match="unknown element 'later'"):
        parse_module(data)


def test_all_modules_load_with_cde_for_every_coded_value() -> None:
    ms = modules()
    assert set(ms) == {
        "rsna-ct-covid",
        "rsna-cxr-covid",
        "corads",
        "ct-severity-25",
        "ct-severity-20",
        "cxr-severity-wong",
        "cxr-severity-mrale",
    }
    for m in ms.values():
        for el in m.elements:
            assert el.cde or not el.coded
            assert all(c.cde for c in el.choices) or not el.coded
    assert ms["rsna-cxr-covid"].wording == "local"
    assert ms["rsna-ct-covid"].wording == "verified"
