"""An agent whose node lacks the volume group or thin pool refuses to start with the
exact commands that prepare them (the real LVM case runs in tests/image/lab_checks.py)."""

from __future__ import annotations

import pytest

from nvme_target.agent.serve import require_thin_pool
from nvme_target.lvm import LogicalVolume
from nvme_target.settings import AgentSettings
from sluice_common.errors import BackendFailure, FailedPrecondition

SETTINGS = AgentSettings(vg="sluice", pool="pool", pvs=("/dev/nvme0n1", "/dev/nvme1n1"))


class Lvm:
    def __init__(self, answer):
        self.answer = answer

    def report(self):
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def lv(name: str, segtype: str) -> LogicalVolume:
    return LogicalVolume(name=name, size=1 << 30, tags=(), segtype=segtype, pool="", origin="",
                         data_percent=0.0, metadata_percent=0.0, metadata_size=0, created_at=None,
                         active=True, extent_size=4 << 20)


def test_no_volume_group_names_both_commands_with_the_devices():
    with pytest.raises(FailedPrecondition) as refused:
        require_thin_pool(SETTINGS, Lvm(BackendFailure('Volume group "sluice" not found')))
    assert ("vgcreate sluice /dev/nvme0n1 /dev/nvme1n1 && "
            "lvcreate --type thin-pool -l 95%FREE -n pool sluice") in str(refused.value)


@pytest.mark.parametrize("names", [(), ("pool",)])
def test_no_thin_pool_names_the_lvcreate(names):
    lvs = {k: lv(k, "linear") for k in names}
    with pytest.raises(FailedPrecondition) as refused:
        require_thin_pool(SETTINGS, Lvm(lvs))
    message = str(refused.value)
    assert "lvcreate --type thin-pool -l 95%FREE -n pool sluice" in message and "vgcreate" not in message


def test_a_thin_pool_lets_it_start():
    require_thin_pool(SETTINGS, Lvm({"pool": lv("pool", "thin-pool")}))
