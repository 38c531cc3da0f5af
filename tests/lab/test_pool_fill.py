"""A thin pool filled to 100% on the real kernel (a 64 MiB pool, so it is quick).

The agent sets --errorwhenfull y on its pool: a writer that needs a new block of a
full pool gets an I/O error at once (dm-thin would otherwise queue it for
no_space_timeout, 60 s, which the host sees as a hang). Other volumes' data survive;
creates are refused past the high mark; past critical every volume reports a
condition (and the watch stream sends it); once the pool grows the volume writes again.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from nvme_target.fill import FillMarks
from nvme_target.kernel_backend import KernelBackend
from nvme_target.model import Portal
from sluice_common.errors import NoSpace
from tests.lab.conftest import SCRATCH_DISK
from tests.lab.kernel import connect, disconnect, lvm, lvs_json, new_host_nqn, read_block, wait_for, write_block

pytestmark = pytest.mark.lab
MiB = 1 << 20
POOL = "fillpool"


@pytest.fixture
def small_pool(thin_pool, tmp_path):
    vg, _ = thin_pool
    lvm("lvcreate", "-q", "--type", "thin-pool", "-L", "64M", "-n", POOL, vg)
    backend = KernelBackend(vg, POOL, (Portal("127.0.0.1", "4420"),), tmp_path / "state",
                            overcommit_ratio=4.0, pvs=(SCRATCH_DISK,), marks=FillMarks(50, 90),
                            fill_interval=0.5)
    backend.restore()  # sets errorwhenfull and starts the fill loop
    yield backend
    backend.close()
    for export in backend.list_exports():
        disconnect(export)
        backend.unexport_volume(export.volume_id)
    for lv in lvs_json(vg):
        if lv["pool_lv"] == POOL:
            lvm("lvremove", "-q", "-y", f"{vg}/{lv['lv_name']}")
    lvm("lvremove", "-q", "-y", f"{vg}/{POOL}")


def fio_fill(device: str, size: str) -> tuple[int, str, float]:
    started = time.monotonic()
    run = subprocess.run(["fio", "--name=fill", f"--filename={device}", "--rw=write", "--bs=1M", "--direct=1",
                          "--ioengine=libaio", "--iodepth=4", f"--size={size}"],
                         capture_output=True, text=True, timeout=600)
    return run.returncode, run.stdout + run.stderr, time.monotonic() - started


def test_full_pool_errors_the_writer_and_keeps_the_rest(small_pool):
    backend = small_pool
    assert backend._pool(backend.view.fresh()).when_full == "error"
    other = backend.create_volume("pvc-bystander", 16 * MiB)
    kept = os.urandom(4 * MiB)
    write_block(backend.lvm.path(other.id), kept)  # O_DIRECT + fsync
    victim = backend.create_volume("pvc-filler", 128 * MiB)
    stop = threading.Event()
    watch = backend.watch_volumes([victim.id], stop, tick=0.5)
    assert next(watch).condition == ""

    host = new_host_nqn()
    export = backend.export_volume(victim.id, [host])
    _, device = connect(export, host, extra="ctrl_loss_tmo=30,reconnect_delay=1")
    rc, out, took = fio_fill(device, "128M")
    print(f"fio on a full pool ended with rc={rc} after {took:.1f} s")
    assert rc != 0 and "error" in out.lower(), out[-2000:]
    assert took < 60, "the writer should fail, not queue for no_space_timeout"

    with ThreadPoolExecutor(1) as ex:
        changed = ex.submit(next, watch).result(timeout=120)  # the watch sends the condition
    assert POOL in changed.condition and "critical" in changed.condition
    assert POOL in backend.get_volume(other.id).condition
    assert [p for p in backend.health().problems if POOL in p]
    with pytest.raises(NoSpace, match=POOL):
        backend.create_volume("pvc-refused", 8 * MiB)
    with pytest.raises(NoSpace, match=POOL):
        backend.create_snapshot("snap-refused", other.id)
    assert hashlib.sha256(read_block(backend.lvm.path(other.id), len(kept))).digest() == \
        hashlib.sha256(kept).digest()

    backend.pool_watch.auto_extend_percent = 200  # what --pool-auto-extend 200 does
    backend.refresh_fill()
    backend.pool_watch.auto_extend_percent = 0
    wait_for(lambda: backend.get_volume(victim.id).condition == "", 60, "the condition to clear")
    rc, out, _ = fio_fill(device, "128M")
    assert rc == 0, out[-2000:]
    stop.set()
