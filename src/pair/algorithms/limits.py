"""Limits for algorithm packages and the inference sandbox (``PAIR_ALGORITHM_*`` variables)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Limits(BaseSettings):
    """Defaults suit a CPU-only site node; raise them for large models."""

    model_config = SettingsConfigDict(env_prefix="PAIR_ALGORITHM_", extra="ignore", frozen=True)

    max_package_bytes: int = Field(default=512 * 1024**2, gt=0, description="Upload/zip size.")
    max_unpacked_bytes: int = Field(default=1024**3, gt=0, description="Sum of unpacked files.")
    max_zip_members: int = Field(default=16, gt=0)
    case_timeout_s: float = Field(default=60.0, gt=0, description="Per case, inference only.")
    load_timeout_s: float = Field(default=60.0, gt=0, description="Worker start + model load.")
    memory_limit_mb: int = Field(default=4096, gt=0, description="RLIMIT_AS of the worker.")
    threads: int = Field(default=1, gt=0, description="onnxruntime intra-op threads.")


def default_limits() -> Limits:
    return Limits()
