"""The use-case schema and the CDE binding: shipped files validate, broken ones are named."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from pair.core.errors import Invalid
from pair.usecases.spec import SHIPPED_DIR, UseCase, load_file, shipped


def test_the_four_shipped_covid_use_cases_validate() -> None:
    ids = {u.id for u in shipped()}
    assert ids == {
        "pair-covid19-ct-pattern",
        "pair-covid19-cxr-pattern",
        "pair-covid19-ct-quantification",
        "pair-covid19-icu-prediction",
    }
    quant = load_file(SHIPPED_DIR / "covid19-ct-quantification.yaml")
    assert all(o.cde_element.startswith("RDES268-") for o in quant.outputs)


def _doc() -> dict:
    return copy.deepcopy(load_file(SHIPPED_DIR / "covid19-ct-pattern.yaml").document)


def test_unknown_element_and_value_codes_are_named() -> None:
    doc = _doc()
    doc["technical_specifications"]["primary_outputs"][0]["cde_element"] = "RDE99999"
    doc["technical_specifications"]["secondary_outputs"][1]["value_set"] = [
        "RDE1360.0",
        "RDE1360.9",
    ]
    with pytest.raises(Invalid) as exc:
        UseCase.from_dict(doc)
    details = exc.value.details
    assert (
        "technical_specifications/primary_outputs/0/cde_element: RDE99999 is not in the CDE catalog"
        in details
    )
    assert any(
        d.startswith(
            "technical_specifications/secondary_outputs/1/value_set/1: "
            "'RDE1360.9' is not a value of RDE1360"
        )
        for d in details
    )


def test_structure_errors_name_the_path_and_type_mismatch() -> None:
    doc = _doc()
    del doc["evaluation_plan"]["primary_metric"]
    doc["overview"]["id"] = "Bad Id"
    with pytest.raises(Invalid) as exc:
        UseCase.from_dict(doc)
    assert "evaluation_plan: 'primary_metric' is a required property" in exc.value.details
    assert any(d.startswith("overview/id:") for d in exc.value.details)

    doc = _doc()
    doc["technical_specifications"]["primary_outputs"][0]["data_type"] = "continuous"
    with pytest.raises(Invalid, match="cannot bind PAIR-RDE7"):
        UseCase.from_dict(doc)


def test_broken_yaml_file_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("overview: [unclosed\n")
    with pytest.raises(Invalid, match=r"bad\.yaml: not valid YAML"):
        load_file(bad)


def test_a_ct_manifest_may_bind_the_local_rsna_category_element() -> None:
    """Manifests name catalog ids beyond RDE### (PAIR-RDE7), so the CT pattern's primary output
    can be declared; a matching manifest has no problems, a wrong code is named."""
    from pair.algorithms.manifest import Manifest
    from pair.algorithms.usecase_check import problems
    from tests.algorithms.algo_builders import manifest

    m = manifest(use_case_id="pair-covid19-ct-pattern", modality=["CT"])
    m["output"]["cde_element"] = "PAIR-RDE7"
    m["output"]["classes"][0]["cde_code"] = "PAIR-RDE7.0"
    m["output"]["classes"][1]["cde_code"] = "PAIR-RDE7.1"
    uc = load_file(SHIPPED_DIR / "covid19-ct-pattern.yaml")
    assert problems(Manifest.model_validate(m), uc) == []
    m["output"]["classes"][1]["cde_code"] = "PAIR-RDE8.1"
    assert problems(Manifest.model_validate(m), uc) == [
        "output.classes[1] (present): PAIR-RDE8.1 is not in use case pair-covid19-ct-pattern's "
        "value set for PAIR-RDE7 (PAIR-RDE7.0, PAIR-RDE7.1, PAIR-RDE7.2, PAIR-RDE7.3)"
    ]
