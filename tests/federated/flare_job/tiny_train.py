"""FLARE Client API script for the deployment tests: receive, evaluate, train, send.

Each site draws its own synthetic data (seeded by its name) and appends one JSON line of
metrics per round to ``pair_site_metrics.jsonl`` in its job folder.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import zlib
from pathlib import Path

import nvflare.client as flare
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tiny_model import TinyNet

torch.set_num_threads(1)
flare.init()
site = flare.get_site_name()
gen = torch.Generator().manual_seed(zlib.crc32(site.encode()))
x = torch.randn(128, 8, generator=gen)
y = (x[:, 0] + 0.5 * x[:, 1] > 0).float()
net = TinyNet()
out = Path("pair_site_metrics.jsonl").resolve()
parser = argparse.ArgumentParser()
parser.add_argument("--delay", type=float, default=0.0)  # seconds per round: keeps a round open
delay = parser.parse_args().delay

while flare.is_running():
    model = flare.receive()
    start = time.time()
    received = {k: torch.as_tensor(v) for k, v in model.params.items()}
    net.load_state_dict(received)
    flat = b"".join(received[k].float().contiguous().numpy().tobytes() for k in sorted(received))
    received_sha = hashlib.sha256(flat).hexdigest()
    loss_fn = torch.nn.BCEWithLogitsLoss()
    with torch.no_grad():
        val_loss = float(loss_fn(net(x), y))
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    for _ in range(5):
        opt.zero_grad()
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
    time.sleep(delay)
    row = {
        "site": site,
        "job": flare.get_job_id(),
        "round": model.current_round,
        "received_sha": received_sha,
        "val_loss": val_loss,
        "train_loss": float(loss),
        "samples": len(x),
        "seconds": time.time() - start,
    }
    with out.open("a") as fh:
        fh.write(json.dumps(row) + "\n")
    flare.send(
        flare.FLModel(
            params=net.state_dict(),
            metrics={"val_loss": val_loss},
            meta={"NUM_STEPS_CURRENT_ROUND": len(x)},
        )
    )
