"""Federated study definition: a versioned YAML file validated with precise errors.

A study says what is trained (model, input), on which labels and cohorts at which sites, how
(strategy, rounds, local epochs) and with which privacy protection. It is engine-agnostic: the
FLARE adapter (``pair.federated.flare.recipe``) turns it into a job.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pair.core.errors import Invalid
from pair.evaluation.runs.cohort import parse_cohort

SCHEMA = "pair-federated-study/1"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")

Strategy = Literal["fedavg", "fedprox", "fedopt", "scaffold"]
Architecture = Literal["small_cnn", "resnet18", "cnn25d"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Strict):
    """Image input: square ``size`` pixels; ``slices`` adjacent CT slices as channels (2.5D)."""

    size: int = Field(64, ge=16, le=1024)
    slices: int = Field(1, ge=1, le=15)
    modality: Literal["CXR", "CT"] = "CXR"

    @model_validator(mode="after")
    def _slab(self) -> InputSpec:
        if self.modality == "CT" and self.slices % 2 == 0:
            raise ValueError("slices must be odd for a CT slab (the centre slice is labelled)")
        return self


class ModelSpec(_Strict):
    architecture: Architecture = "small_cnn"
    width: int = Field(16, ge=4, le=128, description="channels of the first layer")
    norm: Literal["batch", "group"] = "batch"
    input_norm: Literal["none", "image"] = Field(
        "none",
        description="image: each image standardised (zero mean, unit variance) inside the "
        "network, so site tone/exposure offsets do not reach the first layer",
    )


class LabelSource(_Strict):
    """Where the binary label comes from at each site (clinical field or final report)."""

    source: Literal["clinical", "report"] = "clinical"
    field: str = "covid19_positive"
    positive: tuple[str, ...] = ("Yes",)
    negative: tuple[str, ...] = ("No",)


class SiteSpec(_Strict):
    name: str
    cohort: str = ""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("site name must be lower-case letters, digits, '-' or '_' (1-63)")
        return v

    @field_validator("cohort")
    @classmethod
    def _cohort(cls, v: str) -> str:
        if v:
            try:
                parse_cohort(v)
            except Invalid as exc:  # names the bad term; reported with the field path
                raise ValueError(exc.message) from None
        return v


class StrategySpec(_Strict):
    name: Strategy = "fedavg"
    mu: float = Field(0.01, gt=0, le=10, description="FedProx proximal coefficient")
    server_lr: float = Field(1.0, gt=0, le=10, description="FedOpt server learning rate")
    server_momentum: float = Field(0.6, ge=0, lt=1, description="FedOpt server SGD momentum")


class TrainingSpec(_Strict):
    rounds: int = Field(5, ge=1, le=1000)
    local_epochs: int = Field(1, ge=1, le=100)
    batch_size: int = Field(32, ge=1, le=4096)
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(0.05, gt=0, le=10)
    augment: bool = Field(
        False, description="random left-right flips and small shifts of the training images"
    )
    batchnorm_freeze_round: int | None = Field(
        None,
        ge=0,
        description="from this round on, local training normalises with the global model's "
        "BatchNorm statistics instead of one site's batch statistics (FixBN)",
    )
    intensity_augment: bool = Field(
        False,
        description="random tone curve (gamma) and Gaussian blur of the training images, so "
        "the model cannot key on one site's processing",
    )
    min_sites: int = Field(2, ge=1)
    validation_fraction: float = Field(0.25, gt=0, lt=1)
    seed: int = 0
    threads: int = Field(1, ge=1, le=64, description="torch.set_num_threads at each site")
    local_baseline: bool = Field(
        True,
        description="each site also trains a local-only model (same start, same epochs, never "
        "federated) and reports its validation metrics: the portal's local-only bars",
    )


class DifferentialPrivacy(_Strict):
    """Update clipping + Gaussian noise at each site (DP-FedAvg, McMahan et al. 2018)."""

    clip_norm: float = Field(1.0, gt=0)
    noise_multiplier: float = Field(1.0, gt=0)
    delta: float = Field(1e-5, gt=0, lt=1)


class PrivacySpec(_Strict):
    dp: DifferentialPrivacy | None = None
    exclude_vars: str | None = Field(None, description="regex of layers never sent (FLARE filter)")
    percentile: int | None = Field(None, ge=0, le=100, description="FLARE PercentilePrivacy")


class Study(_Strict):
    schema_: Literal["pair-federated-study/1"] = Field(alias="schema")
    id: str
    version: int = Field(1, ge=1)
    title: str = ""
    use_case: str
    model: ModelSpec = ModelSpec()
    input: InputSpec = InputSpec()
    labels: LabelSource = LabelSource()
    sites: tuple[SiteSpec, ...]
    strategy: StrategySpec = StrategySpec()
    training: TrainingSpec = TrainingSpec()
    privacy: PrivacySpec = PrivacySpec()

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("study id must be lower-case letters, digits, '-' or '_' (1-63)")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Study:
        names = [s.name for s in self.sites]
        if len(names) < 1:
            raise ValueError("a study needs at least one site")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"site names must be unique; repeated: {', '.join(dup)}")
        if self.training.min_sites > len(names):
            raise ValueError(
                f"training.min_sites ({self.training.min_sites}) exceeds the {len(names)} sites"
            )
        if self.input.modality == "CXR" and self.input.slices != 1:
            raise ValueError("input.slices must be 1 for CXR; use modality CT for a 2.5D slab")
        if self.privacy.dp is not None and self.model.norm == "batch":
            raise ValueError(
                "differential privacy needs model.norm: group (BatchNorm running statistics "
                "would leave the site un-noised)"
            )
        if self.privacy.dp is not None and self.strategy.name == "scaffold":
            raise ValueError(
                "differential privacy cannot be combined with strategy scaffold (the SCAFFOLD "
                "control variates are derived from the un-noised local update)"
            )
        if self.model.architecture == "cnn25d" and self.input.modality != "CT":
            raise ValueError("model cnn25d needs input.modality CT")
        return self

    @property
    def site_names(self) -> list[str]:
        return [s.name for s in self.sites]

    def site(self, name: str) -> SiteSpec:
        for s in self.sites:
            if s.name == name:
                return s
        raise Invalid(f"Site {name!r} is not part of study {self.id!r}; sites: {self.site_names}.")

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)

    def digest(self) -> str:
        """SHA-256 of the canonical JSON form (provenance: which definition ran)."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def encode(self) -> str:
        """URL-safe text form, safe to pass as one command-line argument to a site script."""
        raw = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode()


def decode_study(text: str) -> Study:
    return parse_study(json.loads(base64.urlsafe_b64decode(text.encode())), "<argument>")


def _where(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "<top>"


def parse_study(data: Any, origin: str) -> Study:
    """Validate a study mapping; the error lists every problem with its field path."""
    if not isinstance(data, dict):
        raise Invalid(f"{origin}: a study is a YAML mapping, got {type(data).__name__}.")
    try:
        return Study.model_validate(data)
    except ValidationError as exc:
        problems = [f"{_where(e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise Invalid(
            f"{origin}: invalid study: " + "; ".join(problems), details=problems
        ) from None


def load_study(path: Path) -> Study:
    """Read and validate a study YAML file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise Invalid(f"{path}: cannot read study file ({exc.strerror}).") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise Invalid(f"{path}: not valid YAML ({exc}).") from None
    return parse_study(data, str(path))


def example_studies() -> list[Path]:
    """The example study files shipped with PAIR."""
    return sorted((Path(__file__).parent / "data" / "studies").glob("*.yaml"))
