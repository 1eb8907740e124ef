"""Server-side FLARE component recording what each site reported, per round, as JSON lines.

Sites send only aggregate numbers (loss, AUC, sensitivity/specificity, sample counts, timings,
DP budget) in ``FLModel.metrics``; this component, running at the hub's FLARE server, appends one
line per site result plus one per finished round (wall time, participation, global model hash).
``pair.federated.service.import_metrics`` loads the file into the hub database.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from nvflare.apis.event_type import EventType
from nvflare.apis.fl_component import FLComponent
from nvflare.apis.fl_context import FLContext
from nvflare.app_common.abstract.fl_model import FLModel
from nvflare.app_common.app_constant import AppConstants
from nvflare.app_common.app_event_type import AppEventType
from nvflare.app_common.utils.fl_model_utils import FLModelUtils

METRICS_FILE = "pair_metrics.jsonl"


def params_digest(params: dict[str, Any] | None) -> tuple[str, int]:
    """SHA-256 over the parameters in name order, and their size in bytes."""
    h = hashlib.sha256()
    size = 0
    for name in sorted(params or {}):
        arr = np.ascontiguousarray(np.asarray(params[name]))  # type: ignore[index]
        h.update(name.encode())
        h.update(arr.tobytes())
        size += arr.nbytes
    return h.hexdigest(), size


class MetricsRecorder(FLComponent):
    def __init__(self, study_id: str, study_version: int = 1, metrics_path: str = "") -> None:
        super().__init__()
        self.study_id = study_id
        self.study_version = study_version
        self.metrics_path = metrics_path
        self._round_started = 0.0
        self._round = 0
        self._sites: list[str] = []

    def _path(self, fl_ctx: FLContext) -> Path:
        if self.metrics_path:
            return Path(self.metrics_path)
        run_dir = fl_ctx.get_engine().get_workspace().get_run_dir(fl_ctx.get_job_id())
        return Path(run_dir) / METRICS_FILE

    def _write(self, fl_ctx: FLContext, record: dict[str, Any]) -> None:
        record = {"study": self.study_id, "study_version": self.study_version, **record}
        path = self._path(fl_ctx)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def handle_event(self, event_type: str, fl_ctx: FLContext) -> None:
        if event_type == EventType.START_RUN:
            import nvflare

            self._write(fl_ctx, {"kind": "start", "engine": f"nvflare {nvflare.__version__}"})
            self._round_started = time.monotonic()
        elif event_type == AppEventType.ROUND_STARTED:
            self._round = int(fl_ctx.get_prop(AppConstants.CURRENT_ROUND, 0) or 0)
            self._round_started = time.monotonic()
            self._sites = []
        elif event_type in (
            AppEventType.BEFORE_CONTRIBUTION_ACCEPT,  # ScatterAndGather sets the result before
            AppEventType.AFTER_CONTRIBUTION_ACCEPT,  # model controllers set it in between
        ):
            self._contribution(fl_ctx)
        elif event_type == AppEventType.AFTER_AGGREGATION:
            self._aggregated(fl_ctx)

    def _contribution(self, fl_ctx: FLContext) -> None:
        result = fl_ctx.get_prop(AppConstants.TRAINING_RESULT)
        if result is None:
            return
        try:
            model = FLModelUtils.from_shareable(result)
        except Exception as exc:  # a malformed result is FLARE's to reject; record the fact
            self.log_warning(fl_ctx, f"PAIR recorder: unreadable result: {exc}")
            return
        meta = model.meta or {}
        site = str(meta.get("pair_site") or fl_ctx.get_peer_context().get_identity_name())
        round_no = int(meta.get("pair_round", self._round))
        if round_no != self._round:  # controllers without ROUND_STARTED (SCAFFOLD) start here
            self._round, self._sites = round_no, []
        if site in self._sites:  # seen at BEFORE already
            return
        digest, size = params_digest(model.params)
        self._sites.append(site)
        metrics = {k: float(v) for k, v in (model.metrics or {}).items() if _number(v)}
        self._write(
            fl_ctx,
            {
                "kind": "site",
                "round": round_no,
                "site": site,
                "metrics": metrics,
                "bytes_received": size,
                "local_model_sha256": digest,
                "at": time.time(),
            },
        )

    def _aggregated(self, fl_ctx: FLContext) -> None:
        aggregate = fl_ctx.get_prop(AppConstants.AGGREGATION_RESULT)
        digest, size = "", 0
        if aggregate is not None:
            try:
                if not isinstance(aggregate, FLModel):
                    aggregate = FLModelUtils.from_shareable(aggregate)
                digest, size = params_digest(aggregate.params)
            except Exception as exc:
                self.log_warning(fl_ctx, f"PAIR recorder: unreadable aggregate: {exc}")
        self._write(
            fl_ctx,
            {
                "kind": "round",
                "round": self._round,
                "sites": sorted(self._sites),
                "wall_s": round(time.monotonic() - self._round_started, 3),
                "aggregate_sha256": digest,
                "bytes_per_model": size,
                "at": time.time(),
            },
        )
        # the next round's clock starts now (SCAFFOLD's controller fires no ROUND_STARTED)
        self._round_started = time.monotonic()
        self._sites = []


def _number(value: Any) -> bool:
    return isinstance(value, int | float | np.floating | np.integer) and not isinstance(value, bool)
