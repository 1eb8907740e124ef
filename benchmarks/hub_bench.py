"""Site → hub push under load, and the hub's change-feed latency.

``--sites`` member sites (a list: ``3,10`` runs both, each against a fresh hub) push their
outboxes to one hub at once. Each site is a data dir whose facility shares ``all``, filled with
generated CT slices through the real ingest pipeline (not timed). Then every site runs the real
pusher (``push_once``, the code of ``pair share push --once``) in its own process against a
``pair serve --role hub`` process, while a subscriber in this process reads the hub's feed as
Server-Sent Events (``GET /api/changes/stream``, as a member site does).

Printed per site count: the wall time (site processes' start included), the push window (first
push to last acknowledgement), hub ingest over that window (instances and MB per second for the
whole consortium), the hub's answer time per STOW-RS batch (p50/p95), and the feed latency:
from the moment a site has the hub's acknowledgement of a batch to the moment the subscriber
receives the ``study.updated`` event of that batch (p50/p95/max; the hub's SSE reads the
database every ``PAIR_FEED_POLL_S``, ``--feed-poll-s``). All processes run on this machine.

Run:  PYTHONPATH=src python benchmarks/hub_bench.py --sites 3,10 --ct 40 --batch 10 \
          [--backend postgresql] [--feed-poll-s 0.5]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import threading
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
    loadavg,
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


def _study_uids(response: httpx.Response) -> list[str]:
    """The studies a STOW-RS answer stored instances of (from each instance's RetrieveURL)."""
    try:
        items = response.json().get("00081199", {}).get("Value", [])
    except ValueError:
        return []
    found: list[str] = []
    for item in items:
        url = (item.get("00081190", {}).get("Value") or [""])[0]
        uid = url.split("/studies/", 1)[1].split("/", 1)[0] if "/studies/" in url else ""
        if uid and uid not in found:
            found.append(uid)
    return found


def _push_worker(site_dir: str) -> None:
    """In a site's own process: push until the outbox is empty; print the hub's latencies and,
    per acknowledged STOW-RS batch, the wall-clock time and the studies it stored."""
    from pair.core.node import open_node
    from pair.sharing.pusher import HubClient, push_once

    node = open_node(site_dir)
    latencies: list[float] = []
    acks: list[tuple[float, list[str]]] = []

    def timed(response: httpx.Response) -> None:
        response.read()  # elapsed: from sending the request to the end of the hub's answer
        if response.request.url.path.endswith("/dicomweb/studies"):
            latencies.append(response.elapsed.total_seconds())
            if response.status_code == 200:
                acks.append((time.time(), _study_uids(response)))

    hub = HubClient(node.settings)
    hub.client.event_hooks["response"] = [timed]
    sent = 0
    t0 = time.time()
    while True:
        outcome = push_once(node, hub)
        sent += outcome["sent"]
        if not outcome["sent"] and not outcome["retry"]:
            break
    t1 = time.time()
    hub.close()
    node.close()
    out = {"sent": sent, "t0": t0, "t1": t1, "latencies": latencies, "acks": acks}
    print(json.dumps(out))


class Subscriber:
    """Reads the hub's feed as SSE in a thread; records when each event arrived."""

    def __init__(self, hub_url: str, token: str) -> None:
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.error = ""
        self._stop = threading.Event()
        self._args = (hub_url, token)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        hub_url, token = self._args
        try:
            with httpx.stream(
                "GET",
                hub_url + "/api/changes/stream",
                params={"since": 0, "max_s": 7200},
                headers={"Authorization": f"Bearer {token}"},
                timeout=None,
            ) as stream:
                for line in stream.iter_lines():
                    if line.startswith("data: "):
                        self.events.append((time.time(), json.loads(line[6:])))
                    if self._stop.is_set():
                        return
        except httpx.HTTPError as exc:
            if not self._stop.is_set():  # not the hub stopping after the run
                self.error = f"{type(exc).__name__}: {exc}"

    def wait_for(self, n: int, timeout: float) -> None:
        deadline = time.time() + timeout
        while len(self.events) < n and time.time() < deadline and not self.error:
            time.sleep(0.05)
        self._stop.set()


def feed_latencies(
    acks: list[tuple[float, list[str]]], events: list[tuple[float, dict[str, Any]]]
) -> list[float]:
    """Pair each study's acknowledged batches with its ``study.updated`` events, in order (one
    event per study per stored batch), and return arrival - acknowledgement per pair."""
    acked: dict[str, list[float]] = {}
    for at, uids in acks:
        for uid in uids:
            acked.setdefault(uid, []).append(at)
    seen: dict[str, list[float]] = {}
    for at, event in events:
        if event.get("kind") == "study.updated":
            seen.setdefault(str(event["study_uid"]), []).append(at)
    return [
        arrived - ack
        for uid, times in acked.items()
        for ack, arrived in zip(sorted(times), sorted(seen.get(uid, [])), strict=False)
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sites", default="3", help="site counts, comma-separated (e.g. 3,10)")
    ap.add_argument("--ct", type=int, default=60, help="CT slices per site")
    ap.add_argument("--batch", type=int, default=20, help="instances per STOW-RS request")
    ap.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument("--feed-poll-s", type=float, default=2.0, help="the hub's PAIR_FEED_POLL_S")
    ap.add_argument("--push-worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.push_worker:
        _push_worker(args.push_worker)
        return
    counts = [int(n) for n in str(args.sites).split(",") if n.strip()]
    if not counts or min(counts) < 1:
        ap.error("--sites: one or more positive numbers, e.g. 3,10")
    server = postgres() if args.backend == "postgresql" else contextlib.nullcontext()
    rows = []
    with server as pg:
        for n in counts:
            with workdir("pair-hub-bench-") as work, database_url(args.backend, pg, work) as db:
                rows.append(run(args, n, work, db))
    print(machine_description())
    print(f"load average before the last run: {rows[-1].pop()}")
    for row in rows[:-1]:
        row.pop()
    print(
        print_table(
            f"site → hub push and feed latency ({args.backend} hub, {args.ct} CT slices per "
            f"site, {args.batch} per STOW-RS request, PAIR_FEED_POLL_S={args.feed_poll_s})",
            [
                "sites",
                "instances",
                "wall s",
                "push s",
                "inst/s",
                "MB/s",
                "STOW p50 ms",
                "STOW p95 ms",
                "feed p50 ms",
                "feed p95 ms",
                "feed max ms",
                "events",
            ],
            rows,
        )
    )


def run(args: argparse.Namespace, n_sites: int, work: Path, hub_db: str) -> list[str]:
    from pair.audit.service import Actor
    from pair.core.config import get_settings
    from pair.core.node import open_node
    from pair.sharing import membership

    hub_dir, port = work / "hub", free_port()
    hub_url = f"http://127.0.0.1:{port}"
    node = open_node(settings=get_settings(hub_dir, database_url=hub_db))
    tokens = []
    with node.db.session() as s:
        for i in range(n_sites):
            membership.register(s, f"Site {i}", f"SITE{i}")
            tokens.append(membership.approve(s, Actor.system(), f"SITE{i}").token)
    node.close()
    sites = [_site(work / f"site{i}", i, args.ct, hub_url, tokens[i]) for i in range(n_sites)]
    env: dict[str, Any] = {
        **os.environ,
        "PAIR_DATABASE_URL": hub_db,
        "PAIR_ROLE": "hub",
        "PAIR_FEED_POLL_S": str(args.feed_poll_s),
        "PYTHONPATH": str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    log = work / "hub.log"
    cmd = [sys.executable, "-m", "pair", "serve", "--data-dir", str(hub_dir), "--port", str(port)]
    with log.open("ab") as out:
        hub = subprocess.Popen([*cmd, "--dicom-port", "0"], env=env, stdout=out, stderr=out)
    load = loadavg()
    try:
        _wait_http(hub_url + "/healthz", hub, log, "hub")
        subscriber = Subscriber(hub_url, tokens[0])
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
        acks = [(at, uids) for r in results for at, uids in r["acks"]]
        subscriber.wait_for(sum(len(uids) for _, uids in acks), timeout=60)
    finally:
        _stop(hub)
    if subscriber.error:
        raise SystemExit(f"the feed subscriber failed: {subscriber.error}")
    sent = sum(r["sent"] for r in results)
    mb = sum(b for _, b in sites) / 1e6
    # ingest throughput over the push window (first site's first push to the last ack), not
    # counting the site processes' start
    window = max(r["t1"] for r in results) - min(r["t0"] for r in results)
    lat = [x for r in results for x in r["latencies"]]
    feed = feed_latencies(acks, subscriber.events)
    return [
        str(n_sites),
        str(sent),
        fmt(wall),
        fmt(window),
        fmt(sent / window),
        fmt(mb / window),
        fmt(percentile(lat, 50) * 1000),
        fmt(percentile(lat, 95) * 1000),
        fmt(percentile(feed, 50) * 1000),
        fmt(percentile(feed, 95) * 1000),
        fmt(max(feed) * 1000 if feed else None),
        str(len(feed)),
        load,
    ]


if __name__ == "__main__":
    main()
