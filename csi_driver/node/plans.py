"""What NodeStageVolume will set up, from the CSI request, with every input checked
before anything is touched; and the NVMe/TCP connect options it implies."""

from __future__ import annotations

import os
from collections.abc import Mapping

from csi_driver.capabilities import Capability
from csi_driver.node import fabrics, filesystems, inputs
from csi_driver.node.hostid import HostIdentity
from csi_driver.node.staging import StagingRecord
from csi_driver.params import AUTH
from nvme_target import dhchap
from nvme_target.dhchap import HostCredentials
from nvme_target.model import QoS
from sluice_common.errors import InvalidArgument


def plan(volume_id: str, pc: Mapping[str, str], staging_path: str, cap: Capability,
         vc: Mapping[str, str]) -> StagingRecord:
    """What stage will set up, with every input checked (nothing is touched yet)."""
    for key in ("nvme.subnqn", "nvme.nsUUID", "nvme.portals"):
        if not pc.get(key):
            raise InvalidArgument(f"publish_context is missing {key}: was the volume ControllerPublished?")
    inputs.nqn(pc["nvme.subnqn"], "publish_context nvme.subnqn")
    inputs.ns_uuid(pc["nvme.nsUUID"], "publish_context nvme.nsUUID")
    fabrics.parse_portals(pc["nvme.portals"])
    auth = dhchap.check_mode(pc.get(AUTH) or "none", f"publish_context {AUTH}")
    inputs.tunables(vc)
    flags = inputs.mount_flags(cap.mount_flags) if cap.access_type == "mount" else ()
    if cap.access_type == "mount" and cap.fs not in filesystems.MKFS:
        raise InvalidArgument(f"volume_capability: fs_type {cap.fs!r} is not supported")
    return StagingRecord(
        volume_id=volume_id, staging_path=staging_path, subnqn=pc["nvme.subnqn"],
        ns_uuid=pc["nvme.nsUUID"], portals=pc["nvme.portals"], access_type=cap.access_type,
        fs_type=cap.fs if cap.access_type == "mount" else "", mount_flags=flags,
        read_only=cap.read_only or pc.get("readonly") == "true", context=dict(vc),
        qos=QoS.from_params(pc).as_params(), auth=auth)


def connect_spec(plan: StagingRecord, identity: HostIdentity, host_iface: str = "",
                 host_traddr: str = "", creds: HostCredentials | None = None) -> fabrics.ConnectSpec:
    tunable = inputs.tunables(plan.context)
    return fabrics.ConnectSpec(
        subnqn=plan.subnqn, portals=fabrics.parse_portals(plan.portals),
        host_nqn=identity.host_nqn, host_id=identity.host_id,
        ctrl_loss_tmo=tunable.get("nvme.ctrlLossTmo", 60),
        reconnect_delay=tunable.get("nvme.reconnectDelay", 2),
        keep_alive_tmo=tunable.get("nvme.keepAliveTmo", 5),
        nr_io_queues=min(tunable.get("nvme.nrIoQueues", 4), os.cpu_count() or 4),
        host_iface=host_iface, host_traddr=host_traddr,
        dhchap_secret=creds.secret if creds else "", dhchap_ctrl_secret=creds.ctrl_secret if creds else "")
