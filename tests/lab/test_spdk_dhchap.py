"""DH-HMAC-CHAP on the SPDK backend against a real nvmf_tgt in the lab guest, with the
kernel's NVMe/TCP initiator as the host (the same proof as tests/lab/test_dhchap.py for
kernel nvmet): the published host with its secrets connects; without a secret, with a
wrong one, with another volume's or with a wrong controller key it is refused, the
kernel's reason in the error; a connected host reconnects with its secret after
nvmf_tgt is killed and started again (the keyring and the host keys are replayed);
after unpublish and a new publish the old secret is refused.

Needs SLUICE_SPDK_NVMF_TGT=/path/to/nvmf_tgt passed into the guest (as test_spdk_target.py).
"""

from __future__ import annotations

import os
import stat

import pytest

from nvme_target.dhchap import new_secret
from nvme_target.model import Portal
from nvme_target.spdk.backend import SpdkBackend, SpdkConfig
from tests.fakes.spdk_real import RealSpdkServer
from tests.lab.kernel import SCRATCH_DISKS, disconnect, new_host_nqn, sh, wait_for
from tests.lab.test_dhchap import attach, live, read_back, refused, round_trip

MiB = 1 << 20
NVMF_TGT = os.environ.get("SLUICE_SPDK_NVMF_TGT", "")
pytestmark = [pytest.mark.lab, pytest.mark.skipif(
    not NVMF_TGT, reason="needs a real SPDK v26.05 build: set SLUICE_SPDK_NVMF_TGT (CI has none)")]


def test_spdk_only_the_published_host_with_its_secret_connects(tmp_path, kernel_modules):
    disk = SCRATCH_DISKS[1]
    sh("wipefs", "-a", disk)
    target = RealSpdkServer(tmp_path / "spdk", image=disk, binary=NVMF_TGT, start_timeout=600)
    config = SpdkConfig(socket=target.path, base_bdev="base0", aio_file=disk, watch_interval=0.5)
    b = SpdkBackend(config, (Portal("127.0.0.1", "4421"),), tmp_path / "state")  # 4420: kernel nvmet
    exports = []
    try:
        b.restore()
        h1, h2 = new_host_nqn(), new_host_nqn()
        a, other = b.create_volume("pvc-sauth-a", 64 * MiB), b.create_volume("pvc-sauth-b", 64 * MiB)
        export = b.add_host(a.id, h1, auth="bidirectional")
        exports.append(export)
        b.add_host(other.id, h2, auth="unidirectional")
        mine, theirs = b.host_credentials(a.id, h1), b.host_credentials(other.id, h2)
        for case, reason in {
            "no secret": refused(export, h1),
            "a wrong secret": refused(export, h1, new_secret()),
            "another volume's secret": refused(export, h1, theirs.secret),
            "a wrong controller key": refused(export, h1, mine.secret, new_secret()),
        }.items():
            print(f"SPDK, {case}: {reason}")
            assert reason.split("refused:", 1)[1].strip(), f"{case}: no kernel reason"

        ctrl, data = attach(export, h1, mine, loss=300)
        target.down()  # SIGKILL: nvmf_tgt forgets its keyring, subsystems and hosts
        target.up()    # the backend's replay loop puts keys, subsystem and host keys back
        wait_for(lambda: live(ctrl), 300, "the host to reconnect with its secret", interval=0.5)
        assert read_back(export) == data
        disconnect(export)

        b.remove_host(a.id, h1)
        b.add_host(a.id, h1, auth="bidirectional")
        renewed = b.host_credentials(a.id, h1)
        assert renewed.secret != mine.secret
        print("SPDK, the old secret after a new publish:", refused(export, h1, mine.secret, mine.ctrl_secret))
        round_trip(export, h1, renewed)
        keys = list((tmp_path / "state" / "keys").iterdir())
        assert keys and all(stat.S_IMODE(k.stat().st_mode) == 0o600 for k in keys)
        assert stat.S_IMODE((tmp_path / "state" / "dhchap.json").stat().st_mode) == 0o600
        assert mine.secret not in "".join(k.read_text() for k in keys)  # the replaced keys are gone
        log = target.log.read_text()  # nvmf_tgt's own log: key names and paths, never a key
        assert renewed.secret not in log and mine.secret not in log
    finally:
        for export in exports:
            disconnect(export)
        for vol_id in [x.volume_id for x in b.list_exports()]:
            b.unexport_volume(vol_id)
        b.close()
        target.stop()
