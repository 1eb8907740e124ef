"""``pair hub ...`` (membership: register at a hub, approve and manage members at the hub) and
``pair share ...`` (a site's policy, manual shares, push and status)."""

from __future__ import annotations

from typing import Annotated

import httpx
import typer
from rich.table import Table

from pair.accounts.service import get_facility
from pair.audit.service import Actor
from pair.cli.common import DataDir, console, handle_errors, node_for
from pair.core.errors import Invalid, PairError
from pair.sharing import membership, outbox
from pair.sharing.feed import studies
from pair.sharing.pusher import HubClient, check_hub_url, push_once

hub_app = typer.Typer(help="Consortium membership: register at a hub; approve members at the hub.")
share_app = typer.Typer(help="What this site shares with its hub, and the outbox.")

Facility = Annotated[str, typer.Option(help="Facility name, code or id.")]


def _cli_actor() -> Actor:
    """Local commands act as the system (docs/security.md), recorded as the command line."""
    return Actor(None, "hub-operator (cli)", None, "admin", "cli")


@hub_app.command("register")
@handle_errors
def hub_register(
    hub_url: Annotated[str, typer.Option(envvar="PAIR_HUB_URL", help="The hub's base URL.")],
    name: Annotated[str, typer.Option(help="This facility's name, as the hub will show it.")],
    code: Annotated[str, typer.Option(help="Facility code at the hub (1-12 letters/digits).")],
    contact: Annotated[str, typer.Option(help="Who the hub operator should call.")] = "",
    site_url: Annotated[str, typer.Option(help="This site's portal URL, for the operator.")] = "",
    ca_file: Annotated[str, typer.Option(envvar="PAIR_HUB_CA_FILE", help="CA bundle.")] = "",
) -> None:
    """Ask a hub to admit this facility; the hub operator approves and sends the credential."""
    base = check_hub_url(hub_url)
    body = {"name": name, "code": code, "contact": contact, "site_url": site_url}
    try:
        resp = httpx.post(
            base + "/api/hub/registrations", json=body, timeout=30, verify=ca_file or True
        )
    except httpx.HTTPError as exc:
        raise PairError(f"Cannot reach the hub at {base}: {exc}.") from None
    if resp.status_code != 201:
        raise PairError(f"The hub refused the registration ({resp.status_code}): {resp.text}")
    data = resp.json()
    console.print(f"registration {data['id']} ({data['code']}) is {data['status']} at {base}")


@hub_app.command("list")
@handle_errors
def hub_list(data_dir: DataDir) -> None:
    """Registrations and members of this hub."""
    table = Table("id", "name", "code", "status", "facility", "contact")
    with node_for(data_dir).db.session() as s:
        for m in membership.list_members(s, _cli_actor()):
            table.add_row(str(m.id), m.name, m.code, m.status, str(m.facility_id or ""), m.contact)
    console.print(table)


def _decide(data_dir: DataDir, ref: str, decision: str) -> None:
    with node_for(data_dir).db.session() as s:
        actor = _cli_actor()
        if decision in ("approve", "reissue"):
            do = membership.approve if decision == "approve" else membership.reissue
            cred = do(s, actor, ref)
            console.print(
                f"{cred.member.code}: {cred.member.status}; site-node user {cred.user_name}"
            )
            console.print("credential (shown once; the site sets it as PAIR_HUB_TOKEN):")
            typer.echo(cred.token)
        else:
            do_other = membership.reject if decision == "reject" else membership.revoke
            member = do_other(s, actor, ref)
            console.print(f"{member.code}: {member.status}")


@hub_app.command("approve")
@handle_errors
def hub_approve(ref: str, data_dir: DataDir) -> None:
    """Approve a pending registration: facility, site-node account, credential."""
    _decide(data_dir, ref, "approve")


@hub_app.command("reject")
@handle_errors
def hub_reject(ref: str, data_dir: DataDir) -> None:
    _decide(data_dir, ref, "reject")


@hub_app.command("revoke")
@handle_errors
def hub_revoke(ref: str, data_dir: DataDir) -> None:
    """Revoke a member's credential (refused with 401 from now on)."""
    _decide(data_dir, ref, "revoke")


@hub_app.command("reissue")
@handle_errors
def hub_reissue(ref: str, data_dir: DataDir) -> None:
    """Issue a new credential (the previous one is revoked)."""
    _decide(data_dir, ref, "reissue")


@hub_app.command("quota")
@handle_errors
def hub_quota(
    facility: Annotated[str, typer.Argument(help="Member facility: code, name or id.")],
    data_dir: DataDir,
    max_instances: Annotated[
        int | None, typer.Option(min=0, help="Instances it may store (0: no limit).")
    ] = None,
    max_bytes: Annotated[
        int | None, typer.Option(min=0, help="Bytes it may store (0: no limit).")
    ] = None,
    clear: Annotated[
        bool, typer.Option("--clear", help="Drop the override: the default applies.")
    ] = False,
) -> None:
    """Show, set or clear one facility's storage quota at the hub (overrides
    PAIR_HUB_QUOTA_MAX_INSTANCES / _BYTES for it; audited as hub.quota.set / hub.quota.clear)."""
    if clear and (max_instances is not None or max_bytes is not None):
        raise Invalid("Give --clear alone, or --max-instances / --max-bytes.")
    with node_for(data_dir).db.session() as s:
        f = get_facility(s, facility)
        if clear:
            studies.clear_facility_quota(s, _cli_actor(), f.id)
        elif max_instances is not None or max_bytes is not None:
            now_n, now_bytes = studies.quota_of(s, f.id)
            new_n = now_n if max_instances is None else max_instances
            new_bytes = now_bytes if max_bytes is None else max_bytes
            studies.set_facility_quota(s, _cli_actor(), f.id, new_n, new_bytes)
        s.flush()
        limit_n, limit_bytes = studies.quota_of(s, f.id)
        used_n, used_bytes = studies.usage(s, f.id)
        source = "own quota" if studies.has_override(s, f.id) else "default quota"
    console.print(
        f"{f.code}: {source}: max instances {limit_n or 'unlimited'}, "
        f"max bytes {limit_bytes or 'unlimited'}; stored {used_n} instances, {used_bytes} bytes"
    )


@share_app.command("policy")
@handle_errors
def share_policy(
    data_dir: DataDir,
    facility: Facility,
    mode: Annotated[str | None, typer.Argument(help="none, all, covid_positive, reported")] = None,
) -> None:
    """Show or set a facility's sharing policy."""
    with node_for(data_dir).db.session() as s:
        f = get_facility(s, facility)
        if mode is not None:
            outbox.set_policy(s, Actor.system(facility_id=f.id), mode, f.id)
        console.print(f"{f.name}: {outbox.get_policy(s, f.id)}")


@share_app.command("case")
@handle_errors
def share_case(data_dir: DataDir, case_id: int) -> None:
    """Share one case whatever the policy ("share this case")."""
    with node_for(data_dir).db.session() as s:
        added = outbox.share_case(s, Actor.system(), case_id)
    console.print(f"case {case_id} queued: {added}")


@share_app.command("push")
@handle_errors
def share_push(
    data_dir: DataDir,
    once: Annotated[bool, typer.Option("--once", help="One round, then exit.")] = False,
) -> None:
    """Queue what the policies share and push due items to PAIR_HUB_URL (PAIR_HUB_TOKEN)."""
    if not once:
        raise Invalid("Use --once; `pair serve --role site` pushes continuously.")
    node = node_for(data_dir)
    hub = HubClient(node.settings)
    try:
        outcome = push_once(node, hub)
    finally:
        hub.close()
    console.print(f"sent {outcome['sent']}, failed {outcome['failed']}, retry {outcome['retry']}")


@share_app.command("status")
@handle_errors
def share_status(data_dir: DataDir, facility: Facility) -> None:
    """Policy, queued/sent/failed counts per kind and the last error."""
    with node_for(data_dir).db.session() as s:
        f = get_facility(s, facility)
        st = outbox.sharing_status(s, Actor.system(facility_id=f.id), facility_id=f.id)
        table = Table("kind", "queued", "sent", "failed")
        for kind, c in st.counts.items():
            table.add_row(kind, *(str(c.get(k, 0)) for k in ("queued", "sent", "failed")))
        console.print(f"{f.name}: policy {st.policy}")
        console.print(table)
        if st.last_error:
            console.print(f"last error: {st.last_error}")
