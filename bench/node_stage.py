"""NodeStageVolume (mount, ext4) through the node plugin vs the same steps by hand.

Runs inside the lab VM (`make bench`). Each round times, side by side, on two volumes
exported the same way:
  plugin — NodeStageVolume over the node plugin's gRPC socket (connect through
           /dev/nvme-fabrics, find the namespace by UUID, mkfs.ext4, mount);
  raw    — the same steps by hand: write the connect string to /dev/nvme-fabrics, poll
           sysfs for the namespace, mkfs.ext4, mount.
Rounds alternate the two so drift hits both. Prints the medians and plugin/raw.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import report  # noqa: E402
from csi_driver.node.filesystems import MKFS  # noqa: E402
from nvme_target.agent.client import AgentClient  # noqa: E402
from sluice_proto import csi_pb2 as pb  # noqa: E402
from tests.conformance.client import mount_cap  # noqa: E402
from tests.lab.kernel import (  # noqa: E402
    block_device_with_uuid, controllers_for, delete_controller, fabrics_connect, lvm, sh, wait_for,
)
from tests.lab.processes import AgentProcess, NodeProcess  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "10"))
MiB = 1 << 20


def setup() -> tuple[AgentProcess, NodeProcess]:
    sh("modprobe", "-a", "nvmet", "nvmet-tcp", "nvme-tcp", "dm-thin-pool")
    lvm("pvcreate", "-q", "/dev/vdb")  # vdb: the create+export bench may have used vda
    lvm("vgcreate", "-q", "nodebench", "/dev/vdb")
    lvm("lvcreate", "-q", "--type", "thin-pool", "-L", "8G", "-n", "pool", "nodebench")
    work = Path("/tmp/bench-node")
    agent = AgentProcess(work / "agent", "nodebench", "pool", "/dev/vdb", target_id="local",
                         portal="127.0.0.1:4430")
    agent.start()
    node = NodeProcess(work / "node")
    node.start()
    return agent, node


def exported(client: AgentClient, name: str, host_nqn: str):
    vol = client.create_volume(name, 256 * MiB)
    return vol, client.export_volume(vol.id, [host_nqn])


def plugin_stage(stub, vol, export, path: str) -> float:
    portal = export.portals[0]
    ctx = {"nvme.transport": "tcp", "nvme.portals": f"{portal.traddr}:{portal.trsvcid}",
           "nvme.subnqn": export.subsystem_nqn, "nvme.nsUUID": export.namespace_uuid, "readonly": "false"}
    t0 = time.perf_counter()
    stub.NodeStageVolume(pb.NodeStageVolumeRequest(volume_id=f"local/{vol.id}", publish_context=ctx,
                                                   staging_target_path=path, volume_capability=mount_cap()),
                         timeout=300)
    return time.perf_counter() - t0


def raw_stage(export, host_nqn: str, path: str) -> float:
    portal = export.portals[0]
    t0 = time.perf_counter()
    fabrics_connect(f"transport=tcp,traddr={portal.traddr},trsvcid={portal.trsvcid},"
                    f"nqn={export.subsystem_nqn},hostnqn={host_nqn}")
    disk = wait_for(lambda: block_device_with_uuid(export.namespace_uuid), 60, "namespace", interval=0.005)
    sh(*MKFS["ext4"], f"/dev/{disk}")
    os.makedirs(path, exist_ok=True)
    sh("mount", "-t", "ext4", f"/dev/{disk}", path)
    return time.perf_counter() - t0


def main() -> int:
    import grpc

    from csi_driver.node.hostid import load_or_create
    from sluice_proto import csi_pb2_grpc

    agent, node = setup()
    channel = grpc.insecure_channel(f"unix:{node.endpoint}")
    stub = csi_pb2_grpc.NodeStub(channel)
    plugin_nqn = stub.NodeGetInfo(pb.NodeGetInfoRequest()).node_id
    raw_nqn = load_or_create(Path("/tmp/bench-node/raw-nvme")).host_nqn
    plugin_t, raw_t = [], []
    for i in range(ROUNDS + 1):
        pvol, pexp = exported(agent.client, f"bench-plugin-{i}", plugin_nqn)
        rvol, rexp = exported(agent.client, f"bench-raw-{i}", raw_nqn)
        order = [("plugin", pvol, pexp), ("raw", rvol, rexp)]
        for kind, vol, exp in order if i % 2 else reversed(order):
            path = f"/tmp/bench-node/{kind}-{i}"
            took = plugin_stage(stub, vol, exp, path) if kind == "plugin" else raw_stage(exp, raw_nqn, path)
            if i:  # round 0 warms both paths up
                (plugin_t if kind == "plugin" else raw_t).append(took)
            sh("umount", path)
            sh("udevadm", "settle")
            for ctrl in controllers_for(exp.subsystem_nqn):
                delete_controller(ctrl)
    channel.close()
    node.stop()
    agent.stop()
    report("NodeStageVolume (ext4, 256 MiB)", ("gRPC NodeStageVolume", plugin_t),
           ("fabrics write, wait, mkfs, mount", raw_t), goal=1.15, name="node-stage")
    return 0


if __name__ == "__main__":
    sys.exit(main())
