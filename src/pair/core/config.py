"""One settings object for the whole node, read from ``PAIR_*`` environment variables."""

from __future__ import annotations

import os
import secrets
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

ALGORITHM_ENV_PREFIX = "PAIR_ALGORITHM_"


class AlgorithmSettings(BaseModel):
    """Limits for algorithm packages and the inference sandbox (``PAIR_ALGORITHM_*``).

    Defaults suit a CPU-only site node; raise them for large models.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_package_bytes: int = Field(default=512 * 1024**2, gt=0, description="Upload/zip size.")
    max_unpacked_bytes: int = Field(default=1024**3, gt=0, description="Sum of unpacked files.")
    max_zip_members: int = Field(default=16, gt=0)
    case_timeout_s: float = Field(default=60.0, gt=0, description="Per case, inference only.")
    load_timeout_s: float = Field(default=60.0, gt=0, description="Worker start + model load.")
    memory_limit_mb: int = Field(default=4096, gt=0, description="RLIMIT_AS of the worker.")
    threads: int = Field(default=1, gt=0, description="onnxruntime intra-op threads.")


class Settings(BaseSettings):
    """Node configuration. Every path defaults to a place under ``data_dir``."""

    model_config = SettingsConfigDict(env_prefix="PAIR_", extra="ignore")

    data_dir: Path = Field(default=Path("./pair-data"))
    database_url: str | None = None
    role: Literal["site", "hub"] = "site"
    site_id: str = "SITE"
    host: str = "127.0.0.1"
    port: int = 8000
    dicom_port: int = 11112
    ae_title: str = "PAIR"
    # DICOM listener limits (docs/security.md): a connection must deliver its complete
    # A-ASSOCIATE-RQ within the ARTIM time; a silent peer is dropped after the network timeout
    # and a DIMSE message not completed after the DIMSE timeout; associations and not-yet-
    # complete connections are limited per peer address and in total, so that peers holding
    # connections open cannot lock a registered sender out
    dicom_artim_timeout_s: float = Field(default=10.0, gt=0, le=600)
    dicom_network_timeout_s: float = Field(default=60.0, gt=0, le=3600)
    dicom_dimse_timeout_s: float = Field(default=60.0, gt=0, le=3600)
    dicom_max_associations: int = Field(default=32, ge=1, le=1000)
    dicom_max_associations_per_address: int = Field(default=8, ge=1, le=1000)
    dicom_max_pending: int = Field(default=64, ge=1, le=10000)
    dicom_max_pending_per_address: int = Field(default=8, ge=1, le=10000)
    # C-STORE: instances of concurrent associations that arrive while an index transaction is
    # running are indexed together in the next one, each acknowledged after that commit
    # (pair.repository.groupcommit); false: one transaction per instance
    dicom_group_commit: bool = True
    max_upload_bytes: int = 2 * 1024**3
    max_instance_bytes: int = 1024**3
    # decompression bombs (docs/security.md): bytes one instance may inflate to (a zip member,
    # a Deflated transfer syntax data set), bytes one request, upload or import may inflate to
    # in all, members one zip may list, and pixel bytes one rendered frame may decode to
    max_inflated_instance_bytes: int = Field(default=256 * 1024**2, gt=0)
    max_inflated_request_bytes: int = Field(default=4 * 1024**3, gt=0)
    max_zip_members: int = Field(default=20_000, gt=0)
    max_decoded_pixel_bytes: int = Field(default=512 * 1024**2, gt=0)
    # browser origins (scheme://host[:port]) allowed to call /dicomweb, /wado and /api from
    # another origin, e.g. an OHIF viewer served elsewhere (docs/viewers.md); comma-separated;
    # empty: no cross-origin access (same-origin use needs nothing)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # an OHIF Viewer static build (the dist/ folder of npm @ohif/app, scripts/fetch_ohif.sh):
    # when set, the node serves it at /ohif/ for its signed-in users, reading this node's
    # /dicomweb with the portal session (docs/viewers.md); unset: no /ohif/ viewer
    ohif_dir: Path | None = None
    # X-Forwarded-Host/-Proto/-Prefix are honoured only from these peer addresses (the reverse
    # proxy in front of the node), for the absolute URLs DICOMweb answers contain
    forwarded_allow_ips: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["127.0.0.1", "::1"]
    )
    session_cookie_secure: bool = False  # the portal's cookie only over HTTPS (set behind TLS)
    # sign-in (docs/security.md): server-side portal sessions end after this long unused, and
    # at the latest this long after sign-in
    session_idle_timeout_s: int = Field(default=1800, ge=60)
    session_absolute_timeout_s: int = Field(default=8 * 3600, ge=300)
    # failed sign-ins: after this many in a row for one account (or from one address), each
    # further failure locks it for base * 2^(n - limit) seconds, at most max; failures are
    # forgotten after window seconds without a failure or a lock
    login_max_failures: int = Field(default=5, ge=1)
    login_max_failures_per_address: int = Field(default=20, ge=1)  # many users share a NAT
    login_lockout_base_s: float = Field(default=30.0, gt=0)
    login_lockout_max_s: float = Field(default=3600.0, gt=0)
    login_failure_window_s: float = Field(default=900.0, gt=0)
    password_min_length: int = Field(default=12, ge=8, le=128)
    log_level: str = "INFO"
    # the fast Part 10 encoder and SR construction (pair.core.fastpaths); false: pydicom's and
    # highdicom's own code paths, the reference the fast paths are tested against
    fast_paths: bool = True
    # pair serve on SIGINT/SIGTERM: how long in-flight HTTP requests, then open DICOM
    # associations, may run on before they are cut (a stalled client must not block a stop)
    shutdown_grace_s: int = Field(default=10, ge=0, le=600)
    uid_root: str = "2.25"
    # pair serve: warm inference workers are closed after this long unused; one spare worker
    # (sandboxed, onnxruntime imported, no model yet) is kept ready for the next new algorithm
    inference_worker_idle_s: float = Field(default=600.0, gt=0)
    inference_max_idle_workers: int = Field(default=4, ge=0)  # each holds a loaded model
    inference_spare_worker: bool = True
    # pair serve: processes that parse, de-identify and store incoming instances (None: none on
    # machines with 1-2 cores, else cores - 1, at most 4; 0: in the serving process itself)
    ingest_workers: int | None = Field(default=None, ge=0, le=64)
    # consortium: a site pushes to and pulls from its hub over HTTP(S) with the bearer token of
    # its site-node account at the hub (docs/hub.md); empty: not a member of any hub
    hub_url: str = ""
    hub_token: SecretStr = SecretStr("")
    # the site's outbox pusher (pair.sharing): a CA bundle to verify a hub with a private CA,
    # the pause between rounds, the retry backoff (exponential with jitter) and the batch size
    hub_ca_file: str = ""
    hub_push_interval_s: float = Field(default=5.0, gt=0)
    hub_backoff_s: float = Field(default=1.0, gt=0)
    hub_backoff_max_s: float = Field(default=300.0, gt=0)
    hub_push_batch: int = Field(default=20, ge=1, le=500)
    # ---- hub change feed (docs/hub-feed.md) ----
    # a site follows its hub's feed (PAIR_HUB_URL / PAIR_HUB_TOKEN) in `pair serve` and pulls
    # new cases into the local facility with code feed_facility (empty: the first facility);
    # webhook deliveries it receives are verified with feed_webhook_secret
    feed_follow: bool = False
    feed_facility: str = ""
    feed_webhook_secret: SecretStr = SecretStr("")
    feed_poll_s: float = Field(default=2.0, gt=0, le=3600)  # follower and SSE database polls
    feed_heartbeat_s: float = Field(default=15.0, gt=0, le=3600)  # SSE comment when idle
    feed_hub_timeout_s: float = Field(default=60.0, gt=0, le=3600)  # one request to the hub
    # the hub's webhook worker: attempts per delivery, first retry delay (doubles each time),
    # time one POST may take
    feed_webhook_attempts: int = Field(default=8, ge=1, le=100)
    feed_webhook_backoff_s: float = Field(default=2.0, gt=0, le=86400)
    feed_webhook_timeout_s: float = Field(default=10.0, gt=0, le=600)
    # what one facility may store at the hub (0: no limit); written as the default quota row
    # when `pair serve` starts with PAIR_ROLE=hub
    hub_quota_max_instances: int = Field(default=0, ge=0)
    hub_quota_max_bytes: int = Field(default=0, ge=0)
    # several server processes on one storage (docs/hub.md): start-up repair keeps files younger
    # than this, which another process may be ingesting; 0 (one process): every orphan goes
    reconcile_min_age_s: float = Field(default=0.0, ge=0)
    # ---- end hub change feed ----
    # the hub that receives signed evaluation feedback (docs/evaluation.md): the hub's
    # ``https://HUB/api/registry/feedback`` (docs/performance-registry.md); empty: hub_url's,
    # with hub_token
    feedback_url: str = ""
    feedback_token: SecretStr = SecretStr("")
    feedback_key_id: str | None = None  # key id in the signature; default: site_id
    feedback_retries: int = Field(default=3, ge=0, le=10)
    feedback_backoff_s: float = Field(default=0.5, ge=0)
    # AI performance registry at the hub (docs/performance-registry.md): feedback is filed under
    # the calendar month or quarter of its evaluation period; the lower CUSUM against the use
    # case's minimum uses reference value k and decision limit h (standard-error units)
    perf_period: Literal["month", "quarter"] = "quarter"
    perf_cusum_k: float = Field(default=0.5, ge=0, le=5)
    perf_cusum_h: float = Field(default=4.0, gt=0, le=50)
    # national registry (docs/registry.md): a case received more than this many days after its
    # study date is a late submission; a DICOM zip holds at most this many instances
    registry_late_days: int = Field(default=30, ge=1, le=3650)
    registry_max_zip_files: int = Field(default=20_000, ge=1)
    # algorithm packages and the inference sandbox, from PAIR_ALGORITHM_* (not PAIR_ALGORITHMS__*)
    algorithms: AlgorithmSettings = Field(default_factory=AlgorithmSettings)

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> list[str]:
        """``https://a.example,https://b.example`` -> exact origins; paths and ``*`` refused."""
        items = _comma_list(value)
        for origin in items:
            parts = urlsplit(origin)
            if (
                "*" in origin
                or parts.scheme not in ("http", "https")
                or not parts.netloc
                or parts.path
                or parts.query
                or parts.fragment
            ):
                raise ValueError(
                    f"CORS origin {origin!r} must be scheme://host[:port], e.g. "
                    "https://viewer.example.org (no path, no wildcard)."
                )
        return [o.lower() for o in items]

    @field_validator("forwarded_allow_ips", mode="before")
    @classmethod
    def _split_ips(cls, value: Any) -> list[str]:
        return _comma_list(value)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            _AlgorithmEnvSource(settings_cls),
            env_settings,
            dotenv_settings,
            file_secret_settings,
        )

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'pair.db').resolve()}"

    @property
    def storage_dir(self) -> Path:
        return self.data_dir / "storage"

    @property
    def tmp_dir(self) -> Path:
        return self.data_dir / "tmp"

    @property
    def quarantine_dir(self) -> Path:
        return self.data_dir / "quarantine"

    @property
    def private_dir(self) -> Path:
        """Site-private material (secret keys, re-identification exports); never shared."""
        return self.data_dir / "private"

    @cached_property
    def site_secret(self) -> bytes:
        """The site's HMAC key for UID remapping and pseudonyms, created on first use."""
        return _read_or_create_secret(self.private_dir / "site-secret.key")

    def ensure_dirs(self) -> None:
        for d in (self.data_dir, self.storage_dir, self.tmp_dir, self.quarantine_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.private_dir.mkdir(parents=True, exist_ok=True, mode=0o700)


class _AlgorithmEnvSource(EnvSettingsSource):
    """``PAIR_ALGORITHM_<FIELD>`` variables into ``Settings.algorithms`` (the names predate the
    nesting, so they are kept instead of pydantic-settings' ``PAIR_ALGORITHMS__<FIELD>``)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        found = {
            name: self.env_vars[f"{ALGORITHM_ENV_PREFIX}{name}".lower()]
            for name in AlgorithmSettings.model_fields
            if f"{ALGORITHM_ENV_PREFIX}{name}".lower() in self.env_vars
        }
        return {"algorithms": found} if found else {}


def env_name(loc: tuple[int | str, ...]) -> str:
    """The environment variable a validation error location of ``Settings`` came from."""
    parts = [str(p) for p in loc]
    if len(parts) > 1 and parts[0] == "algorithms":
        return ALGORITHM_ENV_PREFIX + "_".join(parts[1:]).upper()
    return "PAIR_" + "_".join(parts).upper()


def _read_or_create_secret(path: Path) -> bytes:
    if path.exists():
        return bytes.fromhex(path.read_text().strip())
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = secrets.token_bytes(32)
    # a temp name of its own: processes starting together (ingest workers, a CLI next to the
    # server) must not write into each other's file; exactly one link below wins
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key.hex())
        fh.flush()
        os.fsync(fh.fileno())
    try:
        os.link(tmp, path)  # atomic, fails if another process won the race
    except FileExistsError:
        pass
    else:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        tmp.unlink(missing_ok=True)
    return bytes.fromhex(path.read_text().strip())


def get_settings(data_dir: Path | str | None = None, **overrides: object) -> Settings:
    """Settings for a data dir; CLI ``--data-dir`` wins over ``PAIR_DATA_DIR``."""
    if data_dir is not None:
        overrides["data_dir"] = Path(data_dir)
    return Settings(**overrides)  # type: ignore[arg-type]


def _comma_list(value: Any) -> list[str]:
    """A list setting given as ``a,b`` in the environment (or already a list)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return [str(item).strip() for item in value]
