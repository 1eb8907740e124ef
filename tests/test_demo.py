"""``make demo`` shows an honest evaluation (issue 15): the demo's setup path (not the server)
generates its synthetic cohort, registers the DEMO algorithm trained on ``pair synth``
radiographs of other patients and evaluates it on the first site against RT-PCR. Before, the
demo registered a model that saturated at 1.000 on every ``pair synth`` radiograph: AUC 1.0
from tied scores, specificity 0 at its own threshold, calibration slope 45.6."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from pair.core.node import Node
from pair.demo import DEMO_ALGORITHM, prepare
from pair.evaluation.runs.models import EvaluationRun, RunStatus

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def demo_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    # One site: each synthetic patient is seeded by (seed, site, patient), so site 1 and its
    # evaluation are the same as in the three-site demo, at a third of the cost.
    node = prepare(tmp_path_factory.mktemp("demo") / "data", sites=1)
    yield node
    node.close()


def test_demo_evaluation_is_plausible(demo_node: Node) -> None:
    with demo_node.db.session() as s:
        runs = list(s.query(EvaluationRun))
        assert len(runs) == 1
        run = runs[0]
        assert run.status == RunStatus.DONE, run.error
        assert run.algorithm_id == DEMO_ALGORITHM
        scores = np.array([c["score"] for c in run.cases])
        result = run.result
    assert result is not None
    # scores spread: no saturation, no ties piling up at one value
    assert len(set(np.round(scores, 3))) == scores.size >= 8
    assert scores.std() > 0.02 and scores.max() < 0.999 and scores.min() > 0.001
    auc = result["auc"]
    assert 0.5 < auc["value"] < 1.0
    assert auc["lower"] < auc["value"] < auc["upper"]  # with its confidence interval
    manifest = next(op for op in result["operating_points"] if op["name"] == "manifest")
    assert manifest["source"] == "declared threshold" and manifest["threshold"] == 0.5
    assert 0.0 < manifest["specificity"]["value"] < 1.0
    assert 0.0 < manifest["sensitivity"]["value"] <= 1.0
    assert not any("Degenerate" in w or "below 0.5" in w for w in result["warnings"])


def test_prepared_demo_is_served_as_it_is(demo_node: Node) -> None:
    """A second prepare of the same data dir (``make demo`` again) adds no run."""
    data_dir = demo_node.settings.data_dir
    again = prepare(data_dir)
    try:
        with again.db.session() as s:
            assert s.query(EvaluationRun).count() == 1
    finally:
        again.close()
