"""A runner killed with SIGTERM (CI timeout, systemd, ``kill``) still stops every FLARE process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil

SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from pair.federated.flare.poc import running_consortium

    with running_consortium(Path(sys.argv[1]), ["site-1"]) as consortium:
        time.sleep(3)  # let FLARE start its own helper processes too
        print(json.dumps(sorted(consortium.processes.all_pids())), flush=True)
        time.sleep(600)
    """
)


def test_sigterm_stops_every_process(tmp_path: Path) -> None:
    runner = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert runner.stdout is not None
        line = runner.stdout.readline()
        while line and not line.startswith("["):  # FLARE prints "Connecting to FLARE ..."
            line = runner.stdout.readline()
        pids = json.loads(line)
        assert len(pids) >= 2
        assert all(psutil.pid_exists(pid) for pid in pids)
        runner.send_signal(signal.SIGTERM)
        assert runner.wait(timeout=60) == 128 + signal.SIGTERM
        time.sleep(0.5)
        assert [pid for pid in pids if _running(pid)] == []
    finally:
        if runner.poll() is None:  # SIGTERM first: SIGKILL would leave FLARE's processes behind
            runner.terminate()
            try:
                runner.wait(timeout=60)
            except subprocess.TimeoutExpired:
                runner.kill()
                runner.wait()


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
