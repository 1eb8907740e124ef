"""The algorithm package manifest (``pair-algorithm.yaml``): one pydantic model, one JSON Schema.

The schema published at ``docs/algorithm-package.schema.json`` is generated from these classes
(``pair algorithm schema``), so code and documentation cannot drift apart.
"""

from __future__ import annotations

import json
import re
from enum import StrEnum
from functools import cache
from importlib import resources
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

MANIFEST_NAME = "pair-algorithm.yaml"
FORMAT_VERSION = 1
SEMVER_PATTERN = (
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{1,63}$"
# RadElement ids (RDE1360), PAIR's local extension (PAIR-RDE7) and placeholder element ids of a
# RadElement set whose element ids are not known yet (RDES268-E4): the CDE catalog's id forms
CDE_ELEMENT_PATTERN = r"^(RDE\d+|PAIR-RDE\d+|RDES\d+-E\d+)$"
CDE_CODE_PATTERN = r"^(RDE\d+|PAIR-RDE\d+|RDES\d+-E\d+)(\.\d+)?$"
MODALITY_PATTERN = r"^[A-Z]{2,4}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Layout(StrEnum):
    NCHW = "NCHW"
    NHWC = "NHWC"


class TensorType(StrEnum):
    FLOAT32 = "float32"
    FLOAT16 = "float16"


class Resampling(StrEnum):
    NEAREST = "nearest"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    LANCZOS = "lanczos"
    AREA = "area"


class Aggregation(StrEnum):
    MAX = "max"
    MEAN = "mean"
    MEDIAN = "median"
    FIRST = "first"


class OutputKind(StrEnum):
    BINARY = "binary"
    MULTICLASS = "multiclass"
    SCORE = "score"


class OutputValues(StrEnum):
    PROBABILITIES = "probabilities"
    LOGITS = "logits"
    RAW = "raw"


class Size(_Strict):
    height: int = Field(gt=0, le=4096, description="Rows of the model input.")
    width: int = Field(gt=0, le=4096, description="Columns of the model input.")


class WindowScaling(_Strict):
    """Fixed window on Modality-LUT values (Hounsfield units for CT), mapped to [0, 1]."""

    kind: Literal["window"]
    center: float
    width: float = Field(gt=0)


class PercentileScaling(_Strict):
    """Per-image percentile clipping, mapped to [0, 1]; robust for CR/DX."""

    kind: Literal["percentile"]
    lower: float = Field(ge=0, le=100, default=0.5)
    upper: float = Field(ge=0, le=100, default=99.5)

    @model_validator(mode="after")
    def _ordered(self) -> PercentileScaling:
        if self.lower >= self.upper:
            raise ValueError("lower percentile must be below upper percentile")
        return self


class MinMaxScaling(_Strict):
    """Per-image minimum and maximum mapped to 0 and 1."""

    kind: Literal["minmax"]


class VoiLutScaling(_Strict):
    """The image's own VOI LUT or window (Window Center/Width); min-max when it has none."""

    kind: Literal["voi_lut"]


Scaling = Annotated[
    WindowScaling | PercentileScaling | MinMaxScaling | VoiLutScaling,
    Field(discriminator="kind"),
]


class MeanStdNormalization(_Strict):
    """``(x - mean) / std`` per channel, applied to the [0, 1] image."""

    kind: Literal["meanstd"]
    mean: list[float] = Field(min_length=1, max_length=15)
    std: list[Annotated[float, Field(gt=0)]] = Field(min_length=1, max_length=15)


class RangeNormalization(_Strict):
    """Linear map of [0, 1] onto [min, max] (e.g. 0..255 or -1..1)."""

    kind: Literal["range"]
    min: float
    max: float

    @model_validator(mode="after")
    def _ordered(self) -> RangeNormalization:
        if self.min >= self.max:
            raise ValueError("min must be below max")
        return self


Normalization = Annotated[MeanStdNormalization | RangeNormalization, Field(discriminator="kind")]


class SlabEdges(StrEnum):
    REPLICATE = "replicate"


class SlabSpec(_Strict):
    """2.5D input: ``slices`` CT slices centred on each slice of a series, as channels.

    The series' instances are ordered by position along the slice normal; slab ``i`` holds the
    slices ``i + step * (j - slices // 2)`` for ``j`` in ``0..slices-1``, and a neighbour beyond
    either end of the series is the end slice repeated (``edges: replicate``). One inference per
    slice of the series; ``aggregation`` combines them into the case output.
    """

    slices: int = Field(ge=3, le=15, description="Slices per slab (odd; the centre is labelled).")
    step: int = Field(default=1, ge=1, le=10, description="Distance between slab slices.")
    edges: SlabEdges = Field(
        default=SlabEdges.REPLICATE,
        description="replicate: a neighbour beyond the series end is the end slice repeated.",
    )

    @model_validator(mode="after")
    def _odd(self) -> SlabSpec:
        if self.slices % 2 == 0:
            raise ValueError(
                f"slab.slices must be odd (a slab is centred on one slice); got {self.slices}"
            )
        return self


class InputSpec(_Strict):
    """How one DICOM instance (or each frame of it, or each slab of a CT series) becomes the
    model's input tensor."""

    tensor_name: str = Field(min_length=1, description="Name of the ONNX graph input.")
    layout: Layout = Layout.NCHW
    dtype: TensorType = TensorType.FLOAT32
    size: Size
    channels: int = Field(
        ge=1,
        le=15,
        description="1, or 3 (grey value replicated); with a slab, the number of slab slices.",
    )
    resampling: Resampling = Resampling.BILINEAR
    scaling: Scaling
    invert_monochrome1: bool = Field(
        default=True, description="Invert MONOCHROME1 images so that higher means brighter."
    )
    normalization: Normalization
    aggregation: Aggregation = Field(
        default=Aggregation.MAX,
        description="How per-instance outputs of a series/study become one case output.",
    )
    # absent slab: dumped as before slabs existed (stored manifests, result-cache keys)
    slab: SlabSpec | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="2.5D CT: adjacent slices as channels (channels must equal slab.slices).",
    )

    def describe(self) -> str:
        """One sentence for reports and checklists (CLAIM "preprocessing")."""
        sc = self.scaling
        if isinstance(sc, WindowScaling):
            scaling = f"window center {sc.center:g} / width {sc.width:g}"
        elif isinstance(sc, PercentileScaling):
            scaling = f"percentile scaling ({sc.lower:g}–{sc.upper:g})"
        elif isinstance(sc, MinMaxScaling):
            scaling = "min–max scaling"
        else:
            scaling = "the image's own VOI LUT / window"
        norm = self.normalization
        if isinstance(norm, MeanStdNormalization):
            normalization = f"(x − {norm.mean}) / {norm.std}"
        else:
            normalization = f"range [{norm.min:g}, {norm.max:g}]"
        inversion = "MONOCHROME1 inverted" if self.invert_monochrome1 else "MONOCHROME1 kept"
        text = (
            f"Modality LUT, {scaling}, {inversion}, resized to {self.size.height}×"
            f"{self.size.width} ({self.resampling.value}), {self.channels} channel(s), "
            f"normalized {normalization}, {self.layout.value} {self.dtype.value}; "
            f"several images per case combined by {self.aggregation.value}."
        )
        if self.slab is not None:
            text += (
                f" 2.5D: slabs of {self.slab.slices} slices (step {self.slab.step}) centred on "
                "every slice, ordered along the slice normal, ends replicated; one inference "
                "per slice."
            )
        return text

    @model_validator(mode="after")
    def _channels_match(self) -> InputSpec:
        if self.slab is None and self.channels not in (1, 3):
            raise ValueError(
                f"channels must be 1 or 3 (grey value replicated); got {self.channels} "
                "(more channels only with input.slab, a 2.5D CT slab)"
            )
        if self.slab is not None and self.channels != self.slab.slices:
            raise ValueError(
                f"channels must equal slab.slices ({self.slab.slices}) for a slab input: each "
                f"slice is one channel; got {self.channels}"
            )
        norm = self.normalization
        if isinstance(norm, MeanStdNormalization):
            for name, values in (("mean", norm.mean), ("std", norm.std)):
                if len(values) not in (1, self.channels):
                    raise ValueError(
                        f"normalization.{name} has {len(values)} values; "
                        f"give 1 or {self.channels} (one per channel)"
                    )
        return self


class OutputClass(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Machine name.")
    label: str = Field(min_length=1, description="Human-readable label.")
    cde_code: str | None = Field(
        default=None,
        pattern=CDE_CODE_PATTERN,
        description='RadElement value code, e.g. "RDE1360.1".',
    )


class OutputSpec(_Strict):
    kind: OutputKind
    tensor_name: str = Field(min_length=1, description="Name of the ONNX graph output.")
    values: OutputValues = Field(
        description="probabilities: used as is; logits: sigmoid (one value) or softmax "
        "(several values) is applied; raw: only for kind score."
    )
    cde_element: str | None = Field(
        default=None, pattern=CDE_ELEMENT_PATTERN, description='RadElement element, e.g. "RDE1360".'
    )
    classes: list[OutputClass] = Field(min_length=1, max_length=256)
    positive_class: str | None = Field(
        default=None, description="Name of the class that counts as positive (binary)."
    )
    recommended_threshold: float | None = Field(
        default=None, description="Operating point on the positive-class probability or score."
    )
    ordinal: bool = Field(
        default=False,
        description="multiclass only: the classes are listed in a meaningful order (e.g. "
        "CO-RADS 1 to 5), so evaluations also report linearly and quadratically weighted kappa.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> OutputSpec:
        names = [c.name for c in self.classes]
        if len(set(names)) != len(names):
            raise ValueError("class names must be unique")
        if self.kind == OutputKind.BINARY:
            if len(names) != 2:
                raise ValueError("a binary output needs exactly 2 classes")
            if self.positive_class not in names:
                raise ValueError(f"positive_class must be one of {names}")
        elif self.kind == OutputKind.MULTICLASS:
            if len(names) < 3:
                raise ValueError("a multiclass output needs at least 3 classes (use binary for 2)")
            if self.positive_class is not None and self.positive_class not in names:
                raise ValueError(f"positive_class must be one of {names}")
        else:
            if len(names) != 1:
                raise ValueError("a score output has exactly 1 class (what the score measures)")
        if self.ordinal and self.kind != OutputKind.MULTICLASS:
            raise ValueError("ordinal is only meaningful for kind 'multiclass'")
        if self.values == OutputValues.RAW and self.kind != OutputKind.SCORE:
            raise ValueError("values 'raw' is only allowed for kind 'score'")
        t = self.recommended_threshold
        if t is not None and self.values != OutputValues.RAW and not 0.0 <= t <= 1.0:
            raise ValueError("recommended_threshold on probabilities must lie in [0, 1]")
        return self

    @property
    def positive_index(self) -> int | None:
        names = [c.name for c in self.classes]
        if self.kind == OutputKind.SCORE:
            return 0
        return names.index(self.positive_class) if self.positive_class else None


class ModelFile(_Strict):
    file: str = Field(
        default="model.onnx", pattern=r"^[A-Za-z0-9_.-]+\.onnx$", description="File name."
    )
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Lower-case hex SHA-256.")


class Manifest(_Strict):
    """``pair-algorithm.yaml``: what the algorithm is, and how to feed and read it."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": "urn:pair:schema:algorithm-package:1",
        },
    )

    format_version: Literal[1] = Field(description="Version of this manifest format.")
    id: str = Field(pattern=ID_PATTERN, description="Stable id, lower case.")
    name: str = Field(min_length=1, max_length=200)
    version: str = Field(pattern=SEMVER_PATTERN, description="Semantic version, e.g. 1.2.0.")
    vendor: str = Field(min_length=1, max_length=200)
    licence: str = Field(min_length=1, max_length=200, description="SPDX id or licence name.")
    description: str = Field(min_length=1)
    intended_use: str = Field(min_length=1)
    use_case_id: str = Field(min_length=1, max_length=64)
    modality: list[Annotated[str, Field(pattern=MODALITY_PATTERN)]] = Field(
        min_length=1, description="DICOM Modality (0008,0060) values accepted, e.g. [CR, DX]."
    )
    body_part: str = Field(
        pattern=r"^[A-Z][A-Z _]{1,31}$", description="DICOM Body Part Examined, e.g. CHEST."
    )
    model: ModelFile
    input: InputSpec
    output: OutputSpec

    @model_validator(mode="after")
    def _slab_modality(self) -> Manifest:
        if self.input.slab is not None and self.modality != ["CT"]:
            raise ValueError(
                "input.slab (2.5D) needs a CT series: modality must be [CT], got "
                f"[{', '.join(self.modality)}]"
            )
        return self


def manifest_json_schema() -> dict[str, Any]:
    """The JSON Schema vendors write against (published in ``docs/``)."""
    schema = Manifest.model_json_schema(mode="validation")
    schema["title"] = "PAIR algorithm package manifest (pair-algorithm.yaml)"
    return schema


def manifest_json_schema_text() -> str:
    return json.dumps(manifest_json_schema(), indent=2, sort_keys=True) + "\n"


def parse_manifest_text(text: str) -> tuple[Manifest | None, dict[str, Any] | None, list[str]]:
    """YAML text → (manifest, raw mapping, problems); every schema problem as ``path: rule``."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        return None, None, [f"{MANIFEST_NAME}: not valid YAML{where}: {problem}"]
    if not isinstance(raw, dict):
        return (
            None,
            None,
            [f"{MANIFEST_NAME}: must be a mapping of fields, got {type(raw).__name__}"],
        )
    try:
        return Manifest.model_validate(raw), raw, []
    except ValidationError as exc:
        return None, raw, [_format_error(e) for e in exc.errors()]


@cache
def field_rules() -> dict[str, str]:
    """Each schema pattern's meaning in words (``data/field-rules.yaml``)."""
    text = resources.files("pair.algorithms").joinpath("data/field-rules.yaml").read_text()
    return {k: " ".join(v.split()) for k, v in yaml.safe_load(text)["patterns"].items()}


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _format_error(err: Any) -> str:
    """One schema problem as a sentence: where, what the rule is in words, what was given."""
    loc = ".".join(str(p) for p in err.get("loc", ())) or "(manifest)"
    kind = err.get("type", "")
    ctx = err.get("ctx") or {}
    if kind == "string_pattern_mismatch":
        rule = field_rules().get(str(ctx.get("pattern", "")), "in the form the format page gives")
        msg = f"must be {rule}; got {_shown(err.get('input'))}"
    elif kind == "string_type" and isinstance(err.get("input"), int | float):
        msg = f"must be text: YAML read {_shown(err['input'])} as a number, so put it in quotes"
    elif kind == "missing":
        msg = "is required but missing"
    elif kind == "extra_forbidden":
        msg = "is not a field of the manifest (check the spelling and the indentation)"
    else:
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        if "input" in err and kind not in ("value_error", "assertion_error"):
            msg = f"{msg}; got {_shown(err['input'])}"
    return f"{MANIFEST_NAME}: {loc}: {msg}"


_SEMVER_RE = re.compile(SEMVER_PATTERN)


def semver_key(version: str) -> tuple[Any, ...]:
    """Sort key following semver precedence (pre-releases before the release; build ignored)."""
    m = _SEMVER_RE.match(version)
    if not m:
        raise ValueError(f"not a semantic version: {version!r}")
    major, minor, patch, pre = int(m[1]), int(m[2]), int(m[3]), m[4]
    if pre is None:
        return (major, minor, patch, 1, ())
    parts = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
    return (major, minor, patch, 0, parts)
