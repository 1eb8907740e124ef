"""Run and drive a FLARE deployment: start kits as processes, submit a job, follow it, stop.

``FlareProcesses`` starts the server and clients from provisioned startup kits as separate
process groups (the command is read from each kit's ``sub_start.sh``, so it is FLARE's own)
and stops every group it started. ``FlareAdmin`` talks to a running deployment through the
FLARE API with an admin (lead) kit: submit, poll, download the result.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

from pair.core.errors import PairError

TERMINAL_PREFIX = "FINISHED"
COMPLETED = "FINISHED:COMPLETED"


class DeploymentError(PairError):
    """The deployment did not start, refused the job, or the job did not complete."""


@dataclass
class StartedProcess:
    """One FLARE participant started here: its name, process and where its output goes.

    FLARE starts each job in a new session (``setsid``), outside the participant's process
    group, so the job processes seen under it are remembered and stopped too.
    """

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    _log: IO[bytes]
    # psutil handles, not bare pids: psutil refuses to signal a pid reused by another process
    descendants: dict[int, psutil.Process] = field(default_factory=dict)

    def refresh_descendants(self) -> None:
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            return
        self.descendants.update({c.pid: c for c in children})

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None


def kit_command(kit: Path) -> list[str]:
    """FLARE's start command from the kit's ``sub_start.sh`` (``exec python3 ... -m <kit>``)."""
    script = kit / "startup" / "sub_start.sh"
    if not script.is_file():
        raise DeploymentError(
            f"{kit} is not a FLARE server or client kit (no startup/sub_start.sh)"
        )
    for line in script.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("exec python3 ") and "nvflare.private.fed.app." in stripped:
            argv = shlex.split(stripped)[1:]
            argv = [str(kit) if a == "$WORKSPACE" else a for a in argv]
            return [sys.executable, *argv[1:]]
    raise DeploymentError(f"no FLARE start command found in {script}")


class FlareProcesses:
    """Server and clients from startup kits, each in its own process group, all stopped at exit.

    Use as a context manager: ``stop_all`` runs in ``__exit__`` even when the body fails.
    """

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.env = {**os.environ, **(env or {})}
        self.started: dict[str, StartedProcess] = {}
        self._previous_sigterm: Any = None

    def __enter__(self) -> FlareProcesses:
        # SIGTERM (systemd, CI timeouts, ``kill``) would end Python without running ``__exit__``
        # and leave every FLARE process behind: turn it into SystemExit while processes run.
        self._previous_sigterm = None
        if threading.current_thread() is threading.main_thread():
            self._previous_sigterm = signal.signal(signal.SIGTERM, _exit_on_sigterm)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop_all()
        finally:
            if self._previous_sigterm is not None:
                signal.signal(signal.SIGTERM, self._previous_sigterm)

    def start(self, name: str, kit: Path) -> StartedProcess:
        if name in self.started and self.started[name].alive():
            raise DeploymentError(f"{name} is already running (pid {self.started[name].pid})")
        for stale in ("shutdown.fl", "restart.fl", "pid.fl"):
            (kit / stale).unlink(missing_ok=True)
        log_path = kit / "pair-process.log"
        log = log_path.open("ab")
        proc = subprocess.Popen(
            kit_command(kit),
            cwd=kit,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.started[name] = StartedProcess(name, proc, log_path, log)
        return self.started[name]

    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.started.items()}

    def all_pids(self) -> set[int]:
        """Every process started here or seen under one, as far as known now."""
        for started in self.started.values():
            started.refresh_descendants()
        return {pid for s in self.started.values() for pid in (s.proc.pid, *s.descendants)}

    def kill(self, name: str, grace_s: float = 0.0) -> None:
        """Stop one participant: its process group and every job process seen under it."""
        started = self.started[name]
        started.refresh_descendants()
        _kill_group(started.proc, grace_s)
        _kill_processes(list(started.descendants.values()))
        started._log.close()

    def stop_all(self, grace_s: float = 5.0) -> None:
        """Clients first, then the server: every group started here ends, whatever happened."""
        for name in reversed(list(self.started)):
            try:
                self.kill(name, grace_s)
            except Exception:
                continue

    def check_alive(self) -> None:
        for started in self.started.values():
            started.refresh_descendants()
        dead = {n: p.proc.returncode for n, p in self.started.items() if not p.alive()}
        if dead:
            tails = {n: _tail(self.started[n].log_path) for n in dead}
            raise DeploymentError(f"FLARE processes exited early: {dead}", details=tails)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _kill_group(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM the participant's process group, SIGKILL it after ``grace_s``, reap the leader."""
    pgid = proc.pid  # start_new_session=True: the leader's pid is the group id
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        if not _group_alive(proc, pgid):
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and _group_alive(proc, pgid):
            time.sleep(0.2)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def _group_alive(proc: subprocess.Popen[bytes], pgid: int) -> bool:
    proc.poll()  # reap the leader once it exits, or it lingers as a zombie in the group
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_processes(procs: list[psutil.Process]) -> None:
    """SIGKILL whatever of these is still alive (job processes live in their own sessions)."""
    killed = []
    for proc in procs:
        try:
            proc.kill()
            killed.append(proc)
        except psutil.Error:
            continue
    psutil.wait_procs(killed, timeout=10)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass
class JobOutcome:
    """What a finished (or abandoned) job left: its id, final status and downloaded result."""

    job_id: str
    status: str
    result_dir: Path | None
    polls: list[dict[str, Any]] = field(default_factory=list)

    @property
    def completed(self) -> bool:
        return self.status == COMPLETED


def check_admin_kit(admin_kit: Path) -> None:
    if not (admin_kit / "startup" / "fed_admin.json").is_file():
        raise DeploymentError(f"{admin_kit} is not a FLARE admin kit (no startup/fed_admin.json)")


class FlareAdmin:
    """A FLARE API session made from an admin kit (the user is the kit's own name)."""

    def __init__(
        self, admin_kit: Path, *, username: str | None = None, connect_timeout_s: float = 30.0
    ) -> None:
        from nvflare.fuel.flare_api.flare_api import new_secure_session

        if not (admin_kit / "startup" / "fed_admin.json").is_file():
            raise DeploymentError(
                f"{admin_kit} is not a FLARE admin kit (no startup/fed_admin.json)"
            )
        self.username = username or admin_kit.name
        try:
            self.session = new_secure_session(
                self.username, str(admin_kit), timeout=connect_timeout_s
            )
        except Exception as exc:
            raise DeploymentError(
                f"cannot log in to the FLARE server as {self.username}: {exc}"
            ) from exc

    def __enter__(self) -> FlareAdmin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):  # a broken session must not hide the real error
            self.session.close()

    def connected_sites(self) -> list[str]:
        info = self.session.get_system_info()
        return sorted(c.name for c in info.client_info)

    def wait_for_sites(
        self, sites: list[str], timeout_s: float, check: Callable[[], None] | None = None
    ) -> None:
        """Block until every named site is connected to the server."""
        deadline = time.monotonic() + timeout_s
        while True:
            if check:
                check()
            connected = set(self.connected_sites())
            if set(sites) <= connected:
                return
            if time.monotonic() > deadline:
                missing = sorted(set(sites) - connected)
                raise DeploymentError(f"sites not connected after {timeout_s:.0f} s: {missing}")
            time.sleep(1.0)

    def submit(self, job_dir: Path) -> str:
        try:
            return str(self.session.submit_job(str(job_dir)))
        except Exception as exc:
            raise DeploymentError(f"the FLARE server refused the job: {exc}") from exc

    def status(self, job_id: str) -> dict[str, Any]:
        return dict(self.session.get_job_meta(job_id))

    def follow(
        self,
        job_id: str,
        *,
        timeout_s: float,
        poll_s: float = 2.0,
        on_poll: Callable[[dict[str, Any]], None] | None = None,
        check: Callable[[], None] | None = None,
    ) -> JobOutcome:
        """Poll the job until FLARE says FINISHED:* (or time runs out, then abort it)."""
        deadline = time.monotonic() + timeout_s
        polls: list[dict[str, Any]] = []
        while True:
            meta = self.status(job_id)
            polls.append({"t": time.time(), "status": meta.get("status")})
            if on_poll:
                on_poll(meta)
            status = str(meta.get("status", ""))
            if status.startswith(TERMINAL_PREFIX):
                return JobOutcome(job_id, status, None, polls)
            if time.monotonic() > deadline:
                self.session.abort_job(job_id)
                return JobOutcome(job_id, f"TIMEOUT:{status}", None, polls)
            if check:
                check()
            time.sleep(poll_s)

    def download(self, job_id: str, dest: Path) -> Path:
        return Path(self.session.download_job_result(job_id, str(dest)))


def export_job(
    recipe: Any, dest: Path, *, allow_custom_code: bool = False, min_sites: int | None = None
) -> Path:
    """Export a FLARE recipe to a job folder that PAIR sites accept.

    PAIR sites refuse custom code (``byoc: none``): the training code is installed with PAIR,
    so the exported ``custom/`` folders are dropped and every script must be an absolute path
    that exists on the sites. ``allow_custom_code`` keeps them (simulator, FLARE defaults).

    ``min_sites`` sets the job's ``min_clients``: FLARE aborts the job only when fewer sites
    than this are alive, so a recipe that addresses every site keeps going when one drops out.
    """
    with tempfile.TemporaryDirectory(prefix="pair-fl-export-") as tmp:
        recipe.export(job_dir=tmp)
        exported = [p for p in Path(tmp).iterdir() if p.is_dir()]
        if len(exported) != 1:
            raise DeploymentError(
                f"expected one exported job folder, found {[p.name for p in exported]}"
            )
        job = dest / exported[0].name
        if job.exists():
            shutil.rmtree(job)
        shutil.copytree(exported[0], job)
    if not allow_custom_code:
        for custom in sorted(job.glob("*/custom")):
            shutil.rmtree(custom)
    if min_sites is not None:
        set_min_sites(job, min_sites)
    return job


def set_min_sites(job: Path, min_sites: int) -> None:
    """Write ``min_clients`` into the job's ``meta.json`` (FLARE's job-level site minimum)."""
    if min_sites < 1:
        raise DeploymentError(f"min_sites must be at least 1, got {min_sites}")
    meta_path = job / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["min_clients"] = min_sites
    meta_path.write_text(json.dumps(meta, indent=4))


@contextmanager
def admin_session(admin_kit: Path, connect_timeout_s: float = 30.0) -> Iterator[FlareAdmin]:
    admin = FlareAdmin(admin_kit, connect_timeout_s=connect_timeout_s)
    try:
        yield admin
    finally:
        admin.close()


def run_job(
    admin_kit: Path,
    job_dir: Path,
    result_dest: Path,
    *,
    timeout_s: float,
    on_poll: Callable[[dict[str, Any]], None] | None = None,
    check: Callable[[], None] | None = None,
) -> JobOutcome:
    """Submit a job folder with a lead's kit, follow it to the end, download what it produced."""
    with admin_session(admin_kit) as admin:
        job_id = admin.submit(job_dir)
        outcome = admin.follow(job_id, timeout_s=timeout_s, on_poll=on_poll, check=check)
        if outcome.status.startswith(TERMINAL_PREFIX):
            result_dest.mkdir(parents=True, exist_ok=True)
            outcome.result_dir = admin.download(job_id, result_dest)
        return outcome


GLOBAL_MODEL_FILE = "FL_global_model.pt"


def last_global_model(result_dir: Path) -> Path:
    """The global model a finished job persisted (FLARE's PT persistor, in the server app)."""
    found = sorted(result_dir.glob(f"**/app_server/{GLOBAL_MODEL_FILE}"))
    if not found:
        raise DeploymentError(
            f"no {GLOBAL_MODEL_FILE} in {result_dir}: the job saved no global model"
        )
    return found[0]
