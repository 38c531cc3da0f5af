"""Fixtures for the real-kernel tests (inside the lab VM only; see tests/conftest.py)."""

from __future__ import annotations

import pytest

from nvme_target.kernel_backend import KernelBackend
from nvme_target.model import Portal
from tests.lab.kernel import lvm, lvs_json, port_links, sh, sluice_subsystems

SCRATCH_DISK = "/dev/vda"  # blank sparse disk attached by lab/vm.py for every run
LAB_VG = "labvg"
LAB_POOL = "pool"


@pytest.fixture(scope="session", autouse=True)
def scratch_signatures() -> dict[str, int]:
    """blkid's verdict on each scratch disk before any test touched it (2: no signature)."""
    return {disk: sh("blkid", "-p", disk, check=False).returncode for disk in ("/dev/vda", "/dev/vdb")}


@pytest.fixture(scope="session")
def kernel_modules() -> None:
    sh("modprobe", "-a", "nvmet", "nvmet-tcp", "nvme-tcp", "nvme-fabrics", "dm-thin-pool")


@pytest.fixture(scope="session")
def thin_pool(kernel_modules) -> tuple[str, str]:
    """A volume group on the scratch disk with a 12 GiB thin pool: (vg, pool)."""
    sh("wipefs", "-a", SCRATCH_DISK)
    lvm("pvcreate", "-q", SCRATCH_DISK)
    lvm("vgcreate", "-q", LAB_VG, SCRATCH_DISK)
    lvm("lvcreate", "-q", "--type", "thin-pool", "-L", "12G", "-n", LAB_POOL, LAB_VG)
    yield LAB_VG, LAB_POOL
    lvm("vgremove", "-q", "-f", LAB_VG, check=False)
    lvm("pvremove", "-q", "-f", SCRATCH_DISK, check=False)


def remove_sluice_lvs(vg: str, pool: str) -> None:
    for lv in lvs_json(vg):
        if lv["lv_name"] != pool:
            lvm("lvremove", "-q", "-y", f"{vg}/{lv['lv_name']}")


@pytest.fixture
def kernel_backend(thin_pool, tmp_path):
    """A KernelBackend on the lab thin pool, exporting on 127.0.0.1:4420; torn down to
    nothing after the test (exports, then LVs) and checked for leaks."""
    vg, pool = thin_pool
    backend = KernelBackend(vg, pool, (Portal("127.0.0.1", "4420"),), tmp_path / "state",
                            overcommit_ratio=2.0, pvs=(SCRATCH_DISK,))
    yield backend
    for export in backend.list_exports():
        backend.unexport_volume(export.volume_id)
    remove_sluice_lvs(vg, pool)
    assert sluice_subsystems() == [] and port_links() == []
