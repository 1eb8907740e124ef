"""What the site tells the report that the numbers cannot: data source, truth, population."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class EvaluationContext(BaseModel):
    """Descriptive context for one evaluation; every field is optional free text."""

    model_config = ConfigDict(extra="forbid")

    title: str = "Local evaluation of an AI algorithm"
    site: str | None = None
    algorithm_id: str | None = None
    algorithm_name: str | None = None
    algorithm_version: str | None = None
    model_sha256: str | None = None
    intended_use: str | None = None
    data_source: str | None = None
    truth_source: str | None = None
    population: str | None = None
    exclusions: str | None = None
    study_design: str | None = "Retrospective local evaluation of a fixed, pre-trained model"
    preprocessing: str | None = None
    deidentification: str | None = None
    annotators: str | None = None
    partition: str | None = (
        "All cases are local test data; the algorithm was not trained or tuned on them "
        "(except operating points explicitly marked as chosen on this cohort)."
    )
    protocol: str | None = None
    threshold_source: str | None = "manifest"
    date_range: str | None = None
    # the declared use case's plan checked against the result (``pair.evaluation.runs.plan``)
    plan_check: dict[str, Any] | None = None

    @property
    def algorithm(self) -> str | None:
        parts = [p for p in (self.algorithm_name or self.algorithm_id, self.algorithm_version) if p]
        if not parts:
            return None
        text = " version ".join(parts)
        return f"{text} (sha256 {self.model_sha256[:12]}...)" if self.model_sha256 else text
