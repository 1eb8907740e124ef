"""The ``EvaluationResult`` model: everything one evaluation produced, JSON-serialisable.

The CLI prints its main table, the portal renders it, the HTML report draws from it and the
feedback payload is derived from it. Non-finite numbers (an undefined PPV with no predicted
positives, say) are stored as ``None`` so that the JSON stays standard.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

RESULT_SCHEMA_VERSION = "1.0"
TaskName = Literal["binary", "multiclass"]  # see pair.evaluation.task


def finite(x: float | None) -> float | None:
    """Map nan/inf to None (JSON has no nan)."""
    if x is None:
        return None
    xf = float(x)
    return xf if math.isfinite(xf) else None


class _Model(BaseModel):
    # Any remaining nan/inf is written as null so the JSON stays standard.
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="null")


class Estimate(_Model):
    """A point estimate with its confidence interval and how the interval was obtained."""

    value: float | None
    lower: float | None = None
    upper: float | None = None
    method: str = ""
    numerator: int | None = None
    denominator: int | None = None

    @field_validator("value", "lower", "upper", mode="before")
    @classmethod
    def _finite(cls, v: Any) -> float | None:
        return finite(v)

    @property
    def width(self) -> float | None:
        if self.lower is None or self.upper is None:
            return None
        return self.upper - self.lower


class ConfusionCounts(_Model):
    tp: int
    fp: int
    tn: int
    fn: int


class OperatingPoint(_Model):
    """Threshold metrics; ``source`` says where the threshold came from."""

    name: str  # "manifest", "youden", "target_sensitivity"
    source: str
    threshold: float
    confusion: ConfusionCounts
    sensitivity: Estimate
    specificity: Estimate
    ppv: Estimate
    npv: Estimate
    accuracy: Estimate
    f1: Estimate
    ppv_at_prevalence: Estimate | None = None
    npv_at_prevalence: Estimate | None = None
    chosen_on_same_data: bool = False


class ThresholdRow(_Model):
    """One line of the threshold table (Wilson CIs)."""

    threshold: float
    predicted_positive: int
    sensitivity: Estimate
    specificity: Estimate
    ppv: Estimate
    npv: Estimate


class RocPoint(_Model):
    fpr: float
    tpr: float
    tpr_lower: float | None = None
    tpr_upper: float | None = None


class ReliabilityBinModel(_Model):
    lower_edge: float
    upper_edge: float
    n: int
    mean_predicted: float
    observed: float
    observed_lower: float | None
    observed_upper: float | None


class ReliabilityModel(_Model):
    binning: str
    n_bins: int
    ece: float
    mce: float
    bins: list[ReliabilityBinModel]


class CalibrationResult(_Model):
    brier: Estimate
    slope: Estimate
    intercept: Estimate
    calibration_in_the_large: Estimate
    reliability_uniform: ReliabilityModel
    reliability_quantile: ReliabilityModel
    converged: bool


class SubgroupRow(_Model):
    variable: str
    level: str
    n: int
    positives: int
    negatives: int
    auc: Estimate | None
    sensitivity: Estimate
    specificity: Estimate
    too_small: bool
    reasons: list[str] = Field(default_factory=list)


class AucComparison(_Model):
    auc_a: float
    auc_b: float
    difference: Estimate
    z: float
    p_value: float
    correlation: float | None

    @field_validator("correlation", mode="before")
    @classmethod
    def _finite(cls, v: Any) -> float | None:
        return finite(v)


class McNemarModel(_Model):
    b: int
    c: int
    statistic: float
    p_value: float
    method: str


class ComparisonResult(_Model):
    name_a: str
    name_b: str
    auc: AucComparison
    threshold_a: float
    threshold_b: float
    sensitivity_a: float | None
    sensitivity_b: float | None
    specificity_a: float | None
    specificity_b: float | None
    mcnemar_sensitivity: McNemarModel
    mcnemar_specificity: McNemarModel

    @field_validator(
        "sensitivity_a", "sensitivity_b", "specificity_a", "specificity_b", mode="before"
    )
    @classmethod
    def _finite(cls, v: Any) -> float | None:
        return finite(v)


class CohortDescription(_Model):
    n_cases: int
    n_positive: int
    n_negative: int
    prevalence: float
    n_clusters: int | None = None
    score_min: float
    score_max: float
    groups: dict[str, dict[str, int]] = Field(default_factory=dict)
    n_excluded: int = 0
    exclusion_reasons: dict[str, int] = Field(default_factory=dict)


class EvaluationResult(_Model):
    """Everything for one binary evaluation; see docs/evaluation.md for each field."""

    task: ClassVar[TaskName] = "binary"  # not serialised: binary JSON carries no ``kind``
    schema_version: str = RESULT_SCHEMA_VERSION
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    level: float
    n_boot: int
    seed: int
    auc_method: str
    planning_prevalence: float | None = None
    cohort: CohortDescription
    auc: Estimate
    auc_delong: Estimate
    auc_bootstrap: Estimate
    operating_points: list[OperatingPoint]
    threshold_table: list[ThresholdRow]
    roc: list[RocPoint]
    roc_empirical: list[RocPoint]
    calibration: CalibrationResult | None = None
    subgroups: list[SubgroupRow] = Field(default_factory=list)
    comparison: ComparisonResult | None = None
    warnings: list[str] = Field(default_factory=list)

    def operating_point(self, name: str) -> OperatingPoint:
        for op in self.operating_points:
            if op.name == name:
                return op
        raise KeyError(name)


class ClassMetrics(_Model):
    """One-vs-rest metrics of one class of a multiclass output."""

    name: str
    n_reference: int
    sensitivity: Estimate
    specificity: Estimate
    ppv: Estimate
    auc: Estimate | None = None
    npv: Estimate | None = None


class MulticlassEvaluation(_Model):
    """JSON form of ``stats.multiclass.evaluate_multiclass`` (rows = reference class)."""

    schema_version: str = RESULT_SCHEMA_VERSION
    classes: list[str]
    confusion: list[list[int]]
    accuracy: Estimate
    per_class: list[ClassMetrics]
    kappa: Estimate
    kappa_weighting: str


class ClassRoc(_Model):
    """Empirical one-vs-rest ROC curve of one class (thinned for display)."""

    name: str
    auc: float | None
    points: list[RocPoint]


class ClassCalibration(_Model):
    """One-vs-rest calibration of one class's probability."""

    name: str
    calibration: CalibrationResult


class MulticlassCalibration(_Model):
    """``brier``: multiclass Brier score, the mean over cases of sum_k (p_k - [y = k])^2 (0..2),
    only when every case's probabilities sum to 1; ``per_class``: one-vs-rest Brier,
    recalibration slope/intercept and reliability per class (classes without both reference
    outcomes are left out, with a warning)."""

    brier: Estimate | None
    per_class: list[ClassCalibration]


class MulticlassSubgroupRow(_Model):
    """Accuracy and kappa (weighted when the classes are ordinal) in one subgroup level."""

    variable: str
    level: str
    n: int
    class_counts: dict[str, int]
    accuracy: Estimate
    kappa: Estimate | None
    too_small: bool
    reasons: list[str] = Field(default_factory=list)


class MulticlassCohort(_Model):
    n_cases: int
    class_counts: dict[str, int]  # reference standard
    predicted_counts: dict[str, int]
    n_clusters: int | None = None
    groups: dict[str, dict[str, int]] = Field(default_factory=dict)
    n_excluded: int = 0
    exclusion_reasons: dict[str, int] = Field(default_factory=dict)


class ClassAucDifference(_Model):
    """Paired one-vs-rest AUC of one class for two algorithms (difference = a - b)."""

    name: str
    auc_a: float | None
    auc_b: float | None
    difference: Estimate | None
    p_value: float | None


class MulticlassComparison(_Model):
    """Two multiclass algorithms with the same classes on the same cases (a - b)."""

    name_a: str
    name_b: str
    accuracy_a: float
    accuracy_b: float
    accuracy_difference: Estimate
    mcnemar: McNemarModel  # b = cases only A classifies correctly, c = only B
    kappa_weighting: str
    kappa_a: float | None
    kappa_b: float | None
    kappa_difference: Estimate
    kappa_p_value: float | None
    per_class: list[ClassAucDifference]

    @field_validator("kappa_a", "kappa_b", "kappa_p_value", mode="before")
    @classmethod
    def _finite(cls, v: Any) -> float | None:
        return finite(v)


class MulticlassResult(_Model):
    """Everything for one multiclass evaluation (``kind`` tells it apart from the binary one).

    The prediction of a case is the class with the highest probability (first class on ties);
    ``evaluation`` holds the confusion matrix (rows = reference), accuracy, per-class one-vs-rest
    metrics and Cohen's unweighted kappa; ``kappa_linear`` and ``kappa_quadratic`` are only
    given for ordinal classes. When a patient has several cases every interval comes from the
    patient-clustered bootstrap (``clustered``; ``interval_method`` says so).
    """

    task: ClassVar[TaskName] = "multiclass"
    kind: Literal["multiclass"] = "multiclass"
    schema_version: str = RESULT_SCHEMA_VERSION
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    level: float
    n_boot: int = 0  # resamples of the bootstrap intervals (clustered, Brier, comparison); 0 = none
    seed: int = 0
    interval_method: str = "wilson / delong / fleiss-cohen-everitt"
    decision_rule: str = "argmax"
    class_labels: list[str]
    ordinal: bool
    cohort: MulticlassCohort
    evaluation: MulticlassEvaluation
    macro_auc: float | None
    kappa_linear: Estimate | None = None
    kappa_quadratic: Estimate | None = None
    roc: list[ClassRoc]
    calibration: MulticlassCalibration | None = None
    subgroups: list[MulticlassSubgroupRow] = Field(default_factory=list)
    comparison: MulticlassComparison | None = None
    warnings: list[str] = Field(default_factory=list)

    @field_validator("macro_auc", mode="before")
    @classmethod
    def _finite(cls, v: Any) -> float | None:
        return finite(v)

    @property
    def classes(self) -> list[str]:
        return self.evaluation.classes

    @property
    def clustered(self) -> bool:
        """Every interval comes from the patient-clustered bootstrap (patients with several
        cases)."""
        return self.interval_method.startswith("patient-clustered")


AnyResult = EvaluationResult | MulticlassResult


def load_result(data: dict[str, Any]) -> AnyResult:
    """A stored result JSON as the right model (binary results carry no ``kind``)."""
    if isinstance(data, dict) and data.get("kind") == "multiclass":
        return MulticlassResult.model_validate(data)
    return EvaluationResult.model_validate(data)
