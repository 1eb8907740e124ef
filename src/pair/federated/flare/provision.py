"""FLARE provisioning for a PAIR consortium: the project file, the startup kits, the site policies.

The hub knows its members (facilities with an active ``site-node`` account); this module turns
them into a FLARE project file and runs FLARE's own provisioner (``nvflare provision``), so the
certificates, kits and file formats are FLARE's, not a PAIR imitation. Each site then tightens
its kit with PAIR's ``local/authorization.json`` and ``local/privacy.json`` templates.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from sqlalchemy import select
from sqlalchemy.orm import Session

from pair.accounts.models import Facility, Role, User
from pair.core.errors import PairError

ADMIN_ROLES = ("project_admin", "org_admin", "lead", "member")
POLICY_FILES = ("authorization.json", "privacy.json")
ALLOW_LIST_FILE = "class_allow_list.json"
_EMAIL = re.compile(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$")
_HOST = re.compile(
    r"^(([A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])\.)*[A-Za-z0-9][A-Za-z0-9-]*$"
)
_BUILDERS = [
    {"path": "nvflare.lighter.impl.workspace.WorkspaceBuilder"},
    {
        "path": "nvflare.lighter.impl.static_file.StaticFileBuilder",
        "args": {"config_folder": "config"},
    },
    {"path": "nvflare.lighter.impl.cert.CertBuilder"},
    {"path": "nvflare.lighter.impl.signature.SignatureBuilder"},
]


class ProvisionError(PairError):
    """The consortium cannot be provisioned as asked (bad names, no sites, FLARE refused)."""


@dataclass(frozen=True)
class SiteParticipant:
    """One member site: its FLARE client name and organisation."""

    name: str
    org: str


@dataclass(frozen=True)
class AdminParticipant:
    """A FLARE admin user (the hub operator, a study lead) identified by e-mail."""

    email: str
    org: str
    role: str


@dataclass(frozen=True)
class Consortium:
    """Everything FLARE's project file needs: the server (hub), the sites and the admins."""

    project: str
    server_host: str
    sites: list[SiteParticipant]
    admins: list[AdminParticipant]
    server_org: str = "pair_hub"
    fed_learn_port: int = 8002
    admin_port: int = 8003
    # seconds without a heartbeat before the server drops a site (FLARE's default is 600)
    heartbeat_timeout_s: int | None = None
    extra_host_names: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", self.project):
            raise ProvisionError(
                f"project name {self.project!r}: letters, digits, '-' and '_' only"
            )
        if not _HOST.fullmatch(self.server_host):
            raise ProvisionError(f"server host {self.server_host!r} is not a host name")
        if not self.sites:
            raise ProvisionError("no member sites: a consortium needs at least one site")
        names = [s.name for s in self.sites]
        if len(set(names)) != len(names):
            raise ProvisionError(f"duplicate site names: {sorted(names)}")
        if not any(a.role == "lead" for a in self.admins):
            raise ProvisionError("no lead: only a lead may submit studies (see authorization.json)")
        for admin in self.admins:
            if not _EMAIL.fullmatch(admin.email):
                raise ProvisionError(f"admin {admin.email!r} must be an e-mail address")
            if admin.role not in ADMIN_ROLES:
                raise ProvisionError(f"admin role {admin.role!r} is not one of {ADMIN_ROLES}")
        for port in (self.fed_learn_port, self.admin_port):
            if not 1 <= port <= 65535:
                raise ProvisionError(f"port {port} out of range")


@dataclass(frozen=True)
class ProvisionedKits:
    """Where FLARE wrote the kits, and the root CA fingerprint to share out of band."""

    prod_dir: Path
    server: Path
    sites: dict[str, Path]
    admins: dict[str, Path]
    root_ca_fingerprint: str


def flare_name(code: str) -> str:
    """A facility code as a FLARE client name (letters, digits, '-', '_'), lower case."""
    name = re.sub(r"[^a-z0-9_-]+", "-", code.strip().lower()).strip("-")
    if not name:
        raise ProvisionError(f"facility code {code!r} gives no usable FLARE site name")
    return name


def flare_org(code: str) -> str:
    """FLARE organisations allow letters, digits and '_' only."""
    return re.sub(r"[^A-Za-z0-9_]+", "_", code.strip()).strip("_") or "site"


def member_sites(session: Session) -> list[SiteParticipant]:
    """Facilities registered at the hub that hold an active ``site-node`` account, by code."""
    stmt = (
        select(Facility)
        .join(User, User.facility_id == Facility.id)
        .where(User.role == Role.SITE_NODE.value, User.active.is_(True))
        .distinct()
        .order_by(Facility.code)
    )
    return [SiteParticipant(flare_name(f.code), flare_org(f.code)) for f in session.scalars(stmt)]


def project_dict(consortium: Consortium) -> dict[str, object]:
    """FLARE's project file (api_version 3) for the consortium."""
    consortium.validate()
    server: dict[str, object] = {
        "name": consortium.server_host,
        "type": "server",
        "org": consortium.server_org,
        "fed_learn_port": consortium.fed_learn_port,
        "admin_port": consortium.admin_port,
    }
    if consortium.extra_host_names:
        server["host_names"] = list(consortium.extra_host_names)
    participants: list[dict[str, object]] = [server]
    participants += [{"name": s.name, "type": "client", "org": s.org} for s in consortium.sites]
    participants += [
        {"name": a.email, "type": "admin", "org": a.org, "role": a.role} for a in consortium.admins
    ]
    return {
        "api_version": 3,
        "name": consortium.project,
        "description": "PAIR federated learning consortium",
        "participants": participants,
        "builders": _BUILDERS,
    }


def provision(
    consortium: Consortium,
    workspace: Path,
    *,
    site_policies: bool = True,
    extra_classes: tuple[str, ...] = (),
) -> ProvisionedKits:
    """Write ``project.yml`` and run ``nvflare provision``; return the kits of this provisioning.

    A second run in the same workspace reuses the root CA (FLARE keeps its state) and writes a
    new ``prod_NN`` folder, so sites already joined keep trusting the server.
    """
    project = project_dict(consortium)  # validates before anything is written
    workspace.mkdir(parents=True, exist_ok=True)
    project_file = workspace / "project.yml"
    project_file.write_text(yaml.safe_dump(project, sort_keys=False))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "nvflare.cli",
            "provision",
            "-p",
            str(project_file),
            "-w",
            str(workspace),
            "--force",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    if proc.returncode != 0:
        raise ProvisionError(
            f"nvflare provision failed: {(proc.stderr or proc.stdout).strip()[-2000:]}"
        )
    prod_dirs = sorted((workspace / consortium.project).glob("prod_*"))
    if not prod_dirs:
        raise ProvisionError(
            f"nvflare provision wrote no kits under {workspace / consortium.project}"
        )
    prod = prod_dirs[-1]
    server = prod / consortium.server_host
    if consortium.heartbeat_timeout_s is not None:
        _set_heartbeat_timeout(server, consortium.heartbeat_timeout_s)
    sites = {s.name: prod / s.name for s in consortium.sites}
    if site_policies:
        for kit in sites.values():
            install_site_policies(kit, extra_classes)
        # the hub enforces the same rules on submission: leads only, no custom code
        _write_json(
            server / "local" / "authorization.json",
            json.loads(policy_template("authorization.json")),
        )
        install_class_allow_list(server, extra_classes)
    return ProvisionedKits(
        prod_dir=prod,
        server=server,
        sites=sites,
        admins={a.email: prod / a.email for a in consortium.admins},
        root_ca_fingerprint=root_ca_fingerprint(server / "startup" / "rootCA.pem"),
    )


def root_ca_fingerprint(pem: Path) -> str:
    """``SHA256:AA:BB:...``, the form ``nvflare package --fingerprint`` and openssl print."""
    cert = x509.load_pem_x509_certificate(pem.read_bytes())
    digest = cert.fingerprint(hashes.SHA256()).hex().upper()
    return "SHA256:" + ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def policy_template(name: str) -> str:
    """PAIR's shipped site policy (``authorization.json`` or ``privacy.json``)."""
    if name not in POLICY_FILES:
        raise ProvisionError(f"unknown policy {name!r}; one of {POLICY_FILES}")
    return resources.files("pair.federated.flare").joinpath("policies", name).read_text()


def install_site_policies(kit: Path, extra_classes: tuple[str, ...] = ()) -> list[Path]:
    """Write PAIR's policies into ``<kit>/local`` (FLARE reads them from there at start).

    Only leads may submit jobs and nobody may bring custom code: PAIR's training code is
    installed at the site with the PAIR package, so a job carries configuration only, and
    the site builds only components on its allow list (FLARE's defaults plus PAIR's).
    """
    if not (kit / "startup").is_dir():
        raise ProvisionError(f"{kit} is not a FLARE startup kit (no startup/)")
    local = kit / "local"
    written = [
        _write_json(local / name, json.loads(policy_template(name))) for name in POLICY_FILES
    ]
    written.append(install_class_allow_list(kit, extra_classes))
    return written


def install_class_allow_list(kit: Path, extra_classes: tuple[str, ...] = ()) -> Path:
    """``local/resources.json``: the kit's FLARE defaults with PAIR's components allowed too."""
    local = kit / "local"
    default = local / "resources.json.default"
    if not default.is_file():
        raise ProvisionError(f"{default} missing: not a FLARE server or client kit")
    conf = json.loads(default.read_text())
    shipped = json.loads(
        resources.files("pair.federated.flare").joinpath("policies", ALLOW_LIST_FILE).read_text()
    )
    allowed = list(conf.get("class_allow_list", []))
    allowed += [c for c in [*shipped["class_allow_list"], *extra_classes] if c not in allowed]
    conf["class_allow_list"] = allowed
    conf["class_list_enforcement_mode"] = "enforce"
    return _write_json(local / "resources.json", conf)


def _write_json(target: Path, data: object) -> Path:
    """Whole file or nothing: a half-written policy must never be what FLARE reads."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(target)
    return target


def _set_heartbeat_timeout(server_kit: Path, seconds: int) -> None:
    """FLARE reads ``heart_beat_timeout`` from fed_server.json (a dead site is dropped after it)."""
    path = server_kit / "startup" / "fed_server.json"
    conf = json.loads(path.read_text())
    for srv in conf["servers"]:
        srv["heart_beat_timeout"] = seconds
    path.write_text(json.dumps(conf, indent=2))


def copy_kit(kit: Path, dest: Path) -> Path:
    """Copy a kit (e.g. to hand it to a site); FLARE writes its workspace inside the kit."""
    target = dest / kit.name
    shutil.copytree(kit, target)
    return target
