"""A whole consortium on one machine (FLARE's "proof of concept" shape), on 127.0.0.1 only.

FLARE's own ``nvflare poc`` starts daemons through ``start.sh`` under ``~/.nvflare``; PAIR
instead provisions a real kit set (same certificates, same policies as production) into a
folder it owns and starts every participant as its own process group, so every process can
be recorded and stopped, even when the caller fails.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pair.federated.flare.deploy import FlareAdmin, FlareProcesses
from pair.federated.flare.provision import (
    AdminParticipant,
    Consortium,
    ProvisionedKits,
    SiteParticipant,
    provision,
)

LOOPBACK_HOST = "localhost"  # FLARE binds a server named localhost to 127.0.0.1 (checked in tests)
LEAD = "lead@pair.local"
OPERATOR = "operator@pair.local"


@dataclass
class LocalConsortium:
    """A running loopback consortium: kits, processes, and the lead's admin kit."""

    kits: ProvisionedKits
    processes: FlareProcesses

    @property
    def lead_kit(self) -> Path:
        return self.kits.admins[LEAD]

    @property
    def site_names(self) -> list[str]:
        return sorted(self.kits.sites)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def loopback_consortium(
    sites: list[str],
    *,
    project: str = "pair_local",
    heartbeat_timeout_s: int | None = None,
) -> Consortium:
    """Server ``localhost`` on two free ports, the named sites, a lead and an operator."""
    fed_port = free_port()
    admin_port = free_port()
    while admin_port == fed_port:
        admin_port = free_port()
    return Consortium(
        project=project,
        server_host=LOOPBACK_HOST,
        sites=[SiteParticipant(name, f"org_{i}") for i, name in enumerate(sites, start=1)],
        admins=[
            AdminParticipant(OPERATOR, "pair_hub", "project_admin"),
            AdminParticipant(LEAD, "pair_hub", "lead"),
        ],
        fed_learn_port=fed_port,
        admin_port=admin_port,
        heartbeat_timeout_s=heartbeat_timeout_s,
    )


@contextmanager
def running_consortium(
    workdir: Path,
    sites: list[str],
    *,
    env: dict[str, str] | None = None,
    extra_classes: tuple[str, ...] = (),
    heartbeat_timeout_s: int | None = None,
    ready_timeout_s: float = 120.0,
) -> Iterator[LocalConsortium]:
    """Provision, start server and sites, wait until every site is connected; stop all at exit."""
    consortium = loopback_consortium(sites, heartbeat_timeout_s=heartbeat_timeout_s)
    kits = provision(consortium, workdir, extra_classes=extra_classes)
    with FlareProcesses(env) as processes:
        processes.start("server", kits.server)
        for name, kit in sorted(kits.sites.items()):
            processes.start(name, kit)
        with FlareAdmin(kits.admins[LEAD], connect_timeout_s=ready_timeout_s) as admin:
            admin.wait_for_sites(sorted(kits.sites), ready_timeout_s, processes.check_alive)
        yield LocalConsortium(kits, processes)
