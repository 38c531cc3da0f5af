"""Fencing on the real kernel: after remove_host returns, the removed host has no live
controller on the volume's subsystem, and nothing it sends lands on the volume again.

host A connects and writes with fio; remove_host(A); the volume's content (read on the
target) never changes again while A retries; A's writes fail once its ctrl_loss_tmo
expires; host B publishes and writes a pattern; A cannot reconnect; the pattern holds.
A host that stays allowed is bounced by a fence and reconnects.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time

import pytest

from tests.lab.kernel import (
    connect, controllers_for, disconnect, new_host_nqn, read_block, wait_for, wait_live, write_block,
)

pytestmark = pytest.mark.lab
MiB = 1 << 20
SIZE = 64 * MiB


def target_digest(backend, volume_id: str) -> str:
    """The volume's content as the target's block device holds it (not through NVMe)."""
    return hashlib.sha256(read_block(backend.lvm.path(volume_id), SIZE)).hexdigest()


def fio_writer(device: str) -> subprocess.Popen:
    return subprocess.Popen(
        ["fio", "--name=fenced", f"--filename={device}", "--rw=randwrite", "--bs=64k", "--direct=1",
         "--ioengine=libaio", "--iodepth=4", "--time_based", "--runtime=300", "--randrepeat=0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_removed_host_is_fenced(kernel_backend):
    host_a, host_b, host_c = new_host_nqn(), new_host_nqn(), new_host_nqn()
    vol = kernel_backend.create_volume("pvc-fence", SIZE)
    export = kernel_backend.add_host(vol.id, host_a)
    ctrl_a, device = connect(export, host_a, extra="ctrl_loss_tmo=3,reconnect_delay=1")
    writer = fio_writer(device)
    wait_for(lambda: target_digest(kernel_backend, vol.id) != hashlib.sha256(bytes(SIZE)).hexdigest(),
             60, "host A's writes to reach the volume", interval=0.5)
    assert writer.poll() is None, "fio is still writing when the host is removed"

    kernel_backend.remove_host(vol.id, host_a)
    fenced_at = time.monotonic()
    frozen = target_digest(kernel_backend, vol.id)
    out, _ = writer.communicate(timeout=120)  # A's queued writes fail at its ctrl_loss_tmo
    failed_after = time.monotonic() - fenced_at
    assert writer.returncode != 0, f"fio on the fenced host should fail:\n{out[-2000:]}"
    assert "error" in out.lower() or "Input/output" in out, out[-2000:]
    wait_for(lambda: not controllers_for(export.subsystem_nqn), 60, "host A's controller to go")
    assert target_digest(kernel_backend, vol.id) == frozen, "a write of the fenced host landed"
    print(f"fenced host's writer failed {failed_after:.1f} s after remove_host (ctrl_loss_tmo=3)")

    export = kernel_backend.add_host(vol.id, host_b)
    ctrl_b, device_b = connect(export, host_b, extra="ctrl_loss_tmo=60,reconnect_delay=1")
    pattern = os.urandom(4 * MiB)
    write_block(device_b, pattern)
    want = hashlib.sha256(pattern).hexdigest()
    with pytest.raises(OSError):
        connect(export, host_a)  # A may not come back
    assert hashlib.sha256(read_block(backend_path := kernel_backend.lvm.path(vol.id), len(pattern))).hexdigest() == want

    # a fence bounces the hosts that stay allowed: B reconnects and keeps working
    kernel_backend.add_host(vol.id, host_c)
    kernel_backend.remove_host(vol.id, host_c)
    wait_live(ctrl_b, 60)
    assert hashlib.sha256(read_block(device_b, len(pattern))).hexdigest() == want
    write_block(device_b, pattern, offset=8 * MiB)
    assert hashlib.sha256(read_block(backend_path, len(pattern), 8 * MiB)).hexdigest() == want
    assert kernel_backend.get_export(vol.id).hosts == frozenset({host_b})
    assert kernel_backend.exporter.store.fencing(vol.id) == frozenset()
    disconnect(export)
    assert ctrl_a not in controllers_for(export.subsystem_nqn)
