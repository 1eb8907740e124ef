"""HTML report, figure export, PDF and the prefilled checklist."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
import pytest

from pair.evaluation.evaluate import evaluate_scores
from pair.evaluation.report.checklist import checklist_definition
from pair.evaluation.report.context import EvaluationContext
from pair.evaluation.report.render import render_html, write_report
from pair.evaluation.result import EvaluationResult
from pair.evaluation.task import task_for
from tests.evaluation.eval_reference import synthetic

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def result() -> EvaluationResult:
    y, p = synthetic(300, 61)
    rng = np.random.default_rng(62)
    return evaluate_scores(
        y,
        p,
        0.5,
        n_boot=200,
        groups={"sex": rng.choice(["F", "M"], y.size)},
        compare_scores=np.clip(p + rng.normal(scale=0.2, size=y.size), 0, 1),
        prevalence=0.08,
        exclusions={"inference failed": 3},
    )


@pytest.fixture(scope="module")
def context() -> EvaluationContext:
    return EvaluationContext(
        site="Demo site",
        algorithm_id="pair-demo-cxr",
        algorithm_name="PAIR demo CXR",
        algorithm_version="0.1.0",
        model_sha256="ab" * 32,
        data_source="Local PACS, 2020-2021",
        truth_source="RT-PCR within 48 h",
        population="Adults with suspected COVID-19",
    )


def test_html_is_self_contained_with_all_sections(
    result: EvaluationResult, context: EvaluationContext
) -> None:
    html = render_html(result, context)
    for section in (
        "algorithm",
        "cohort",
        "main",
        "figures",
        "thresholds",
        "calibration",
        "subgroups",
        "comparison",
        "checklist",
        "warnings",
    ):
        assert f'id="{section}"' in html
    assert "<script" not in html and "http://" not in html and "https://" not in html
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) == 3  # ROC, calibration, subgroup forest plot
    assert all(base64.b64decode(img).startswith(PNG_MAGIC) for img in images)
    captions = re.findall(r"<figcaption[^>]*>([^<]+)</figcaption>", html)
    assert [c.split(":")[0] for c in captions] == ["ROC curve", "Calibration", "Subgroups"]
    assert all(len(c.split()) > 15 for c in captions)  # sentences, not figure keys
    assert "RT-PCR within 48 h" in html and "PAIR demo CXR version 0.1.0" in html
    assert f"{result.auc.value:.3f}" in html
    assert "PPV at prevalence 0.080" in html


def test_user_text_is_escaped(result: EvaluationResult) -> None:
    html = render_html(result, EvaluationContext(data_source="<script>alert(1)</script>"), pngs={})
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html


def test_write_report_exports_png_pdf_and_json(
    result: EvaluationResult, context: EvaluationContext, tmp_path: Path
) -> None:
    files = write_report(result, context, tmp_path / "out", pdf=True)
    assert files.html.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert set(files.figures) == {"roc", "calibration", "subgroups"}
    assert all(p.read_bytes().startswith(PNG_MAGIC) for p in files.figures.values())
    assert files.pdf is not None and files.pdf.read_bytes().startswith(b"%PDF")
    back = EvaluationResult.model_validate_json(files.json.read_text(encoding="utf-8"))
    assert back.auc == result.auc


def test_checklist_prefill(result: EvaluationResult, context: EvaluationContext) -> None:
    spec = checklist_definition()
    cl = task_for(result).checklist(context, result)
    assert cl.version == spec["version"] and len(cl.items) == len(spec["items"])
    by_id = {it.id: it for it in cl.items}
    assert by_id["13"].answer == "RT-PCR within 48 h"
    assert by_id["7"].answer == "Local PACS, 2020-2021"
    assert by_id["10"].answer is not None and "inference failed: 3" in by_id["10"].answer
    assert by_id["35"].answer is not None and "AUC" in by_id["35"].answer
    assert not by_id["42"].prefilled  # funding: only the site knows
    empty = task_for(result).checklist(EvaluationContext(study_design=None, partition=None), result)
    assert not {it.id: it for it in empty.items}["13"].prefilled
