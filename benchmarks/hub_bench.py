"""Site → hub push under load: ``--sites`` member sites push their outboxes to one hub at once.

Each site is a data dir whose facility shares ``all``, filled with generated CT slices through
the real ingest pipeline (not timed). Then every site runs the real pusher (``push_once``, the
code of ``pair share push --once``) in its own process against a ``pair serve --role hub``
process; the hub's answer time of every request is recorded. Printed: instances and MB per
second for the whole consortium, and the hub's latency per STOW-RS batch (p50/p95/max).

Run:  PYTHONPATH=src python benchmarks/hub_bench.py --sites 3 --ct 60 [--backend postgresql]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from common import (
    SRC,
    _stop,
    _wait_http,
    database_url,
    fmt,
    machine_description,
    make_dataset,
    percentile,
    postgres,
    print_table,
    workdir,
)

from pair.db.throwaway import free_port


def _site(folder: Path, index: int, ct: int, hub_url: str, token: str) -> tuple[Path, int]:
    """A site data dir with ``ct`` instances ingested and the policy ``all``."""
    from pair.accounts import service
    from pair.audit.service import Actor
    from pair.core.config import get_settings
    from pair.core.node import open_node
    from pair.repository.ingest import Payload, ingest_batch
    from pair.sharing import outbox

    data = make_dataset(folder / "files", ct=ct, cr=0, ct_per_series=20, seed=100 + index)
    settings = get_settings(folder / "site", hub_url=hub_url, hub_token=token)
    node = open_node(settings=settings)
    try:
        with node.db.session() as s:
            fid = service.create_facility(s, f"Site {index}", f"SITE{index}").id
            outbox.set_policy(s, Actor.system(facility_id=fid), "all", fid)
        actor = Actor.system("bench", facility_id=fid)
        for i in range(0, len(data.files), 20):
            batch = [Payload(p.read_bytes(), p.name) for p in data.files[i : i + 20]]
            ingest_batch(node, fid, batch, "bench", actor)
    finally:
        node.close()
    return folder / "site", data.total_bytes


def _push_worker(site_dir: str) -> None:
    """In a site's own process: push until the outbox is empty; print the hub's latencies."""
    from pair.core.node import open_node
    from pair.sharing.pusher import HubClient, push_once

    node = open_node(site_dir)
    latencies: list[float] = []

    def timed(response: httpx.Response) -> None:
        response.read()  # elapsed: from sending the request to the end of the hub's answer
        latencies.append(response.elapsed.total_seconds())

    hub = HubClient(node.settings)
    hub.client.event_hooks["response"] = [timed]
    sent = 0
    start = time.perf_counter()
    while True:
        outcome = push_once(node, hub)
        sent += outcome["sent"]
        if not outcome["sent"] and not outcome["retry"]:
            break
    wall = time.perf_counter() - start
    hub.close()
    node.close()
    print(json.dumps({"sent": sent, "wall_s": wall, "latencies": latencies}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sites", type=int, default=3)
    ap.add_argument("--ct", type=int, default=60, help="CT slices per site")
    ap.add_argument("--batch", type=int, default=20, help="instances per STOW-RS request")
    ap.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument("--push-worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.push_worker:
        _push_worker(args.push_worker)
        return
    server = postgres() if args.backend == "postgresql" else contextlib.nullcontext()
    with (
        workdir("pair-hub-bench-") as work,
        server as pg,
        database_url(args.backend, pg, work) as hub_db,
    ):
        run(args, work, hub_db)


def run(args: argparse.Namespace, work: Path, hub_db: str) -> None:
    from pair.audit.service import Actor
    from pair.core.config import get_settings
    from pair.core.node import open_node
    from pair.sharing import membership

    hub_dir, port = work / "hub", free_port()
    hub_url = f"http://127.0.0.1:{port}"
    node = open_node(settings=get_settings(hub_dir, database_url=hub_db))
    tokens = []
    with node.db.session() as s:
        for i in range(args.sites):
            membership.register(s, f"Site {i}", f"SITE{i}")
            tokens.append(membership.approve(s, Actor.system(), f"SITE{i}").token)
    node.close()
    sites = [_site(work / f"site{i}", i, args.ct, hub_url, tokens[i]) for i in range(args.sites)]
    env: dict[str, Any] = {
        **os.environ,
        "PAIR_DATABASE_URL": hub_db,
        "PAIR_ROLE": "hub",
        "PYTHONPATH": str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    log = work / "hub.log"
    cmd = [sys.executable, "-m", "pair", "serve", "--data-dir", str(hub_dir), "--port", str(port)]
    with log.open("ab") as out:
        hub = subprocess.Popen([*cmd, "--dicom-port", "0"], env=env, stdout=out, stderr=out)
    try:
        _wait_http(hub_url + "/healthz", hub, log, "hub")
        start = time.perf_counter()
        workers = []
        for (site_dir, _), token in zip(sites, tokens, strict=True):
            site_env = {
                **env,
                "PAIR_ROLE": "site",
                "PAIR_DATABASE_URL": f"sqlite:///{site_dir / 'pair.db'}",
                "PAIR_HUB_URL": hub_url,
                "PAIR_HUB_TOKEN": token,
                "PAIR_HUB_PUSH_BATCH": str(args.batch),
            }
            workers.append(
                subprocess.Popen(
                    [sys.executable, __file__, "--push-worker", str(site_dir)],
                    env=site_env,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        results = [
            json.loads(w.communicate(timeout=3600)[0].strip().splitlines()[-1]) for w in workers
        ]
        wall = time.perf_counter() - start
    finally:
        _stop(hub)
    sent = sum(r["sent"] for r in results)
    mb = sum(b for _, b in sites) / 1e6
    lat = [x for r in results for x in r["latencies"]]
    rows = [
        [
            str(args.sites),
            str(sent),
            fmt(wall),
            fmt(sent / wall),
            fmt(mb / wall),
            fmt(percentile(lat, 50) * 1000),
            fmt(percentile(lat, 95) * 1000),
            fmt(max(lat) * 1000 if lat else None),
        ]
    ]
    print(machine_description())
    print(
        print_table(
            f"site → hub push ({args.backend} hub, {args.batch} instances per STOW-RS request)",
            ["sites", "instances", "wall s", "inst/s", "MB/s", "p50 ms", "p95 ms", "max ms"],
            rows,
        )
    )


if __name__ == "__main__":
    main()
