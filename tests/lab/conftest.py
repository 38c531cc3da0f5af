"""Fixtures for the real-kernel tests (inside the lab VM only; see tests/conftest.py)."""

from __future__ import annotations

import pytest

from tests.lab.kernel import sh

SCRATCH_DISK = "/dev/vda"  # blank sparse disk attached by lab/vm.py for every run
LAB_VG = "labvg"
LAB_POOL = "pool"


@pytest.fixture(scope="session")
def kernel_modules() -> None:
    sh("modprobe", "-a", "nvmet", "nvmet-tcp", "nvme-tcp", "nvme-fabrics", "dm-thin-pool")


@pytest.fixture(scope="session")
def thin_pool(kernel_modules) -> tuple[str, str]:
    """A volume group on the scratch disk with a 12 GiB thin pool: (vg, pool)."""
    sh("wipefs", "-a", SCRATCH_DISK)
    sh("pvcreate", "-q", SCRATCH_DISK)
    sh("vgcreate", "-q", LAB_VG, SCRATCH_DISK)
    sh("lvcreate", "-q", "--type", "thin-pool", "-L", "12G", "-n", LAB_POOL, LAB_VG)
    yield LAB_VG, LAB_POOL
    sh("vgremove", "-q", "-f", LAB_VG, check=False)
    sh("pvremove", "-q", "-f", SCRATCH_DISK, check=False)
