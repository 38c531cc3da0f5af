"""The target agent SIGKILLed at every step boundary of every operation, then the call
retried: exactly one object of the right size and content, nothing orphaned (LVs,
subsystems, port links, host entries, state-file entries).

The real agent process runs with SLUICE_FAULT_FILE set (nvme_target/faults.py); the
test arms one fault point, makes the call (the agent dies inside it), disarms, restarts
the agent (which restores and clears crash debris) and retries the call.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from nvme_target import faults, naming
from nvme_target.model import Source
from sluice_common.errors import SluiceError
from tests.lab.kernel import NVMET, lvm, new_host_nqn, port_links, read_block, sluice_subsystems, write_block
from tests.lab.attach import agent_vg
from tests.lab.processes import AgentProcess

pytestmark = pytest.mark.lab
MiB = 1 << 20
H1, H2 = new_host_nqn(), new_host_nqn()
PATTERN = os.urandom(4 * MiB)


@dataclass
class Case:
    point: str
    call: Callable                      # (client, ctx) -> anything; ctx["vol"] is the base volume
    lvs: Callable = lambda c: {c["vol"]: 16 * MiB}  # (ctx) -> {lv name: size} after the retry
    exports: Callable = lambda c: {}    # (ctx) -> {volume id: sorted hosts} after the retry
    setup: Callable = lambda cl, c: None  # (client, ctx): what the call starts from
    content: Callable | None = None     # (ctx) -> (lv name, expected sha256 of its head)


def clone_call(client, ctx):
    ctx["clone"] = client.create_volume("pvc-crash-clone", 32 * MiB, source=Source("volume", ctx["vol"])).id


def export_to(*hosts):
    return lambda client, ctx: client.export_volume(ctx["vol"], list(hosts))


CLONE = dict(call=clone_call, lvs=lambda c: {c["vol"]: 16 * MiB, c["clone"]: 32 * MiB},
             content=lambda c: (c["clone"], hashlib.sha256(PATTERN).hexdigest()))


def export_case(point):
    return Case(point, call=export_to(H1), exports=lambda c: {c["vol"]: [H1]})


def remove_case(point):
    return Case(point, setup=export_to(H1, H2), call=lambda cl, c: cl.remove_host(c["vol"], H2),
                exports=lambda c: {c["vol"]: [H1]})


def unexport_case(point):
    return Case(point, setup=export_to(H1), call=lambda cl, c: cl.unexport_volume(c["vol"]))


# one base volume (16 MiB, PATTERN at its head) serves every case; each case's own
# objects are removed after it; expand and delete change the base, so they come last
CASES = [
    Case("create.after-lvcreate", call=lambda cl, c: c.update(new=cl.create_volume("pvc-crash-new", 8 * MiB).id),
         lvs=lambda c: {c["vol"]: 16 * MiB, c["new"]: 8 * MiB}),
    Case("clone.after-snapshot", **CLONE),
    Case("clone.after-extend", **CLONE),
    Case("snapshot.after-lvcreate", call=lambda cl, c: c.update(snap=cl.create_snapshot("snap-crash", c["vol"]).id),
         lvs=lambda c: {c["vol"]: 16 * MiB, c["snap"]: 16 * MiB}),
    export_case("apply.after-namespace"),
    export_case("apply.after-hosts"),
    export_case("export.after-configfs"),
    Case("add_host.after-configfs", setup=export_to(H1), call=lambda cl, c: cl.add_host(c["vol"], H2),
         exports=lambda c: {c["vol"]: sorted([H1, H2])}),
    remove_case("remove_host.after-store"),
    remove_case("remove_host.after-disallow"),
    remove_case("fence.after-unlink"),
    unexport_case("unexport.after-store"),
    unexport_case("unexport.after-unlink"),
    Case("expand.after-extend", call=lambda cl, c: cl.expand_volume(c["vol"], 32 * MiB),
         lvs=lambda c: {c["vol"]: 32 * MiB}, content=lambda c: (c["vol"], hashlib.sha256(PATTERN).hexdigest())),
    Case("delete.after-unexport", setup=export_to(H1), call=lambda cl, c: cl.delete_volume(c["vol"], unexport=True),
         lvs=lambda c: {}),
]


@pytest.fixture
def agent(thin_pool, tmp_path, monkeypatch):
    vg, pool = thin_pool
    armed = tmp_path / "fault-point"
    monkeypatch.setenv(faults.ENV, str(armed))
    proc = AgentProcess(tmp_path, vg, pool, "/dev/vda")
    proc.armed = armed
    proc.start()
    yield proc
    armed.write_text("")
    if proc.proc.poll() is not None:
        proc.start()
    proc.empty()
    proc.stop()
    proc.client.close()


def sluice_lvs(vg: str) -> dict[str, tuple[int, str]]:
    out = lvm("lvs", "--reportformat", "json", "--units", "b", "--nosuffix", "-o", "lv_name,lv_size,lv_tags", vg)
    return {lv["lv_name"]: (int(lv["lv_size"]), lv["lv_tags"])
            for lv in json.loads(out.stdout)["report"][0]["lv"] if lv["lv_name"] != "pool"}


def configfs_exports() -> dict[str, list[str]]:
    return {sub: sorted(p.name for p in (NVMET / "subsystems" / sub / "allowed_hosts").iterdir())
            for sub in sluice_subsystems()}


def check(agent: AgentProcess, case: Case, ctx: dict) -> None:
    vg = agent_vg(agent)
    lvs = sluice_lvs(vg)
    assert {name: size for name, (size, _) in lvs.items()} == case.lvs(ctx), case.point
    assert not [name for name, (_, tags) in lvs.items() if "incomplete" in tags], case.point
    exports = case.exports(ctx)
    assert configfs_exports() == {naming.subsystem_nqn(v): h for v, h in exports.items()}, case.point
    assert len(port_links()) == len(exports), case.point
    assert sorted(p.name for p in (NVMET / "hosts").iterdir()) == sorted({h for hs in exports.values() for h in hs})
    state_file = agent.socket.parent / "state" / "exports.json"
    state = json.loads(state_file.read_text())["exports"] if state_file.exists() else {}
    assert state == {v: {"hosts": h} for v, h in exports.items()}, (case.point, state)
    assert [(x.volume_id, sorted(x.hosts)) for x in agent.client.list_exports()] == sorted(exports.items())
    if case.content is not None:
        name, digest = case.content(ctx)
        assert hashlib.sha256(read_block(f"/dev/{vg}/{name}", len(PATTERN))).hexdigest() == digest, case.point


def reset(agent: AgentProcess, keep: str) -> None:
    """Remove what a case made, keeping the base volume."""
    client = agent.client
    for export in client.list_exports():
        client.unexport_volume(export.volume_id)
    for snap in client.list_snapshots():
        client.delete_snapshot(snap.id)
    for volume in client.list_volumes():
        if volume.id != keep:
            client.delete_volume(volume.id)


def test_every_step_boundary_converges(agent):
    base = agent.client.create_volume("pvc-crash", 16 * MiB).id
    write_block(f"/dev/{agent_vg(agent)}/{base}", PATTERN)
    for case in CASES:
        ctx = {"vol": base}
        case.setup(agent.client, ctx)
        agent.armed.write_text(case.point)
        with pytest.raises(SluiceError):
            case.call(agent.client, ctx)
        assert agent.proc.wait(timeout=60) == -9, f"{case.point}: the fault point was not reached"
        agent.armed.write_text("")
        agent.start()  # restores, and clears crash debris
        case.call(agent.client, ctx)
        case.call(agent.client, ctx)  # and once more: still one object
        check(agent, case, ctx)
        reset(agent, keep=base)
    assert sluice_lvs(agent_vg(agent)) == {} and sluice_subsystems() == [] and port_links() == []
