"""FLARE Client API script run at each site: receive → PAIR core → send.

FLARE copies this file into the job and runs it at every site (``launch_once``: one process
for all rounds). It handles the three tasks of a PAIR job: ``train`` (evaluate the global model,
train locally, send the protected update and aggregate metrics), ``validate`` (cross-site
evaluation: metrics of the received model on this site's validation split) and ``submit_model``
(the site's last local model, for cross-site evaluation). Data come from ``--data``, this
site's entry of ``--site-data`` or the site's ``PAIR_FL_SITE_DATA``; nothing but parameters and
aggregate metrics is sent.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from pathlib import Path


def _args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="PAIR federated site script")
    parser.add_argument("--study", required=True, help="encoded study (pair.federated.study)")
    parser.add_argument("--data", default=os.environ.get("PAIR_FL_SITE_DATA", ""))
    parser.add_argument(
        "--site-data", default="", help="encoded site -> folder map (recipe.encode_site_data)"
    )
    return parser.parse_args(argv)


def _data_folder(args: argparse.Namespace, site: str) -> str:
    if args.site_data:
        folders = json.loads(base64.urlsafe_b64decode(args.site_data.encode()))
        if site in folders:
            return str(folders[site])
    if not args.data:
        # RuntimeError, not SystemExit: FLARE's in-process runner logs only Exceptions
        raise RuntimeError(f"{site}: no site data; pass --data or set PAIR_FL_SITE_DATA")
    return str(args.data)


def main(argv: list[str] | None = None) -> None:
    import nvflare.client as flare
    from nvflare.app_common.app_constant import AlgorithmConstants
    from nvflare.app_common.utils.fedprox_utils import get_fedprox_mu

    from pair.federated.core.site import SiteRunner
    from pair.federated.study import decode_study

    args = _args(sys.argv[1:] if argv is None else argv)
    study = decode_study(args.study)
    flare.init()
    site = flare.get_site_name()
    runner = SiteRunner.from_folder(study, site, Path(_data_folder(args, site)))
    while flare.is_running():
        incoming = flare.receive()
        if incoming is None:
            break
        if flare.is_submit_model():
            state = runner.local_state or incoming.params or {}
            flare.send(flare.FLModel(params=state, meta={"pair_site": site}))
            continue
        if flare.is_evaluate():
            metrics = runner.validate(incoming.params)
            flare.send(flare.FLModel(metrics=metrics, meta={"pair_site": site}))
            continue
        round_no = int(incoming.current_round or 0)
        mu = get_fedprox_mu(incoming) if study.strategy.name == "fedprox" else None
        c_global = (incoming.meta or {}).get(AlgorithmConstants.SCAFFOLD_CTRL_GLOBAL)
        if study.strategy.name == "scaffold" and c_global is None:
            c_global = {}  # first round: zero server control
        state, metrics, steps = runner.round(
            incoming.params, round_no, mu or None, c_global=c_global
        )
        metrics["bytes_received"] = float(metrics["bytes_sent"])  # one full model came in
        meta: dict[str, object] = {
            "NUM_STEPS_CURRENT_ROUND": steps,
            "pair_site": site,
            "pair_round": round_no,
        }
        if runner.scaffold_delta is not None:
            meta[AlgorithmConstants.SCAFFOLD_CTRL_DIFF] = {
                k: v.detach().clone() for k, v in runner.scaffold_delta.items()
            }
        flare.send(flare.FLModel(params=state, metrics=metrics, meta=meta))


if __name__ == "__main__":
    try:
        main()
    except Exception:  # FLARE's in-process runner hides the cause; the site log keeps it
        import traceback

        traceback.print_exc()
        raise
