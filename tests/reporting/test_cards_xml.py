from __future__ import annotations

from pathlib import Path

import pytest

from pair.core.errors import Invalid
from pair.reporting.cards_xml import export_xml, import_xml
from pair.reporting.engine import evaluate
from pair.reporting.loader import modules

MINI = (Path(__file__).parent / "data" / "mini-effusion.cards.xml").read_text()

CASES = [
    (
        {"effusion": "present", "size": "large", "right": 1, "left": 2, "ggo_pct": 12.345},
        "large_effusion",
        {
            "findings": "Pleural effusion, large volume.\nLung score 3/8. Ground glass 12.3 %.",
            "recommendation": "Consider thoracentesis if clinically indicated.",
        },
    ),
    (
        {"effusion": "present", "size": "small", "right": 0, "left": 0},
        "effusion",
        {"findings": "Small or medium pleural effusion.\nLung score 0/8."},
    ),
    (
        {"effusion": "absent", "nodes": ["other", "hilar"], "right": 0, "left": 0, "ggo_pct": 3},
        "attention",
        {
            "impression": "Hilar lymphadenopathy (hilar and other). Lung score 0/8. "
            "Ground glass 3.0 %."
        },
    ),
    (
        {"effusion": "absent", "right": 4, "left": 2},
        "attention",
        {"impression": "High lung score. Lung score 6/8."},
    ),
    (
        {"effusion": "absent", "right": 0, "left": 1},
        "normal",
        {"impression": "No pleural effusion. Lung score 1/8."},
    ),
]


def test_hand_written_cards_module_imports_and_evaluates() -> None:
    m = import_xml(MINI, "mini-effusion.cards.xml")
    assert (m.id, m.version, m.modality) == ("mini-effusion", "1.0.0", "CT")
    assert m.element("size").relevant_if is not None
    assert m.element("ggo_pct").required_if is not None
    assert m.element("effusion").choices[1].cde == "RDE1605.1"
    for inputs, endpoint, sections in CASES:
        ev = evaluate(m, inputs)
        assert (ev.endpoint, ev.sections) == (endpoint, sections)
    # conditional requirement from ConditionalProperties
    with pytest.raises(Invalid, match="ggo_pct: required"):
        evaluate(m, {"effusion": "present", "size": "medium", "right": 0, "left": 0})
    # relevance: size is ignored without an effusion
    assert evaluate(m, {"effusion": "absent", "size": "large", "right": 0, "left": 0}).ignored == [
        "size"
    ]


def test_round_trip_of_the_hand_written_module() -> None:
    m = import_xml(MINI)
    again = import_xml(export_xml(m))
    assert again == m
    assert export_xml(again) == export_xml(m)
    for inputs, _, _ in CASES:
        assert evaluate(again, inputs).sections == evaluate(m, inputs).sections


@pytest.mark.parametrize("module_id", sorted(modules()))
def test_round_trip_of_shipped_modules(module_id: str) -> None:
    m = modules()[module_id]
    xml = export_xml(m)
    assert "<ReportingModule" in xml and "<SchemaVersion>2.0</SchemaVersion>" in xml
    assert import_xml(xml) == m


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<notxml", "not well-formed XML"),
        ("<Module/>", "root element must be <ReportingModule>"),
        ("<ReportingModule><Metadata/></ReportingModule>", "needs Metadata, DataElements"),
        ('<!DOCTYPE x [<!ENTITY a "b">]><ReportingModule/>', "DTD entity declarations"),
        (
            MINI.replace(
                "<ArithmeticExpression>right + left", "<ArithmeticExpression>right + nope"
            ),
            "expression refers to unknown element 'nope'",
        ),
        (
            MINI.replace('EndPointId="normal"', 'EndPointId="gone"'),
            "unknown default endpoint 'gone'",
        ),
    ],
)
def test_import_errors(text: str, message: str) -> None:
    with pytest.raises(Invalid, match=message):
        import_xml(text)


def test_foreign_uncoded_cards_module() -> None:
    """A CARDS module without PAIR extensions or CDE codes (the shape of ACR's COVID module)."""
    text = (Path(__file__).parent / "data" / "acr-style-category.cards.xml").read_text()
    m = import_xml(text)
    assert (m.id, m.version) == ("category-chest-ct", "1.0.0")
    assert not m.element("Classification").coded and m.element("Classification").cde is None
    ev = evaluate(m, {"Classification": "typical"})
    assert ev.endpoint == "endpoint_typical"
    assert ev.sections["impression"] == "Typical sentence. [TagTyp]"
    assert (
        evaluate(m, {"Classification": "typical", "InsertReportCoding": "No"}).sections[
            "impression"
        ]
        == "Typical sentence."
    )
    assert evaluate(m, {"Classification": "negative"}).sections["impression"] == (
        "Negative sentence."
    )
    assert import_xml(export_xml(m)) == m
