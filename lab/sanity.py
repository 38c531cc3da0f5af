"""`make sanity`: the Kubernetes csi-sanity suite against Sluice in all-in-one mode,
inside the lab VM, when a `csi-sanity` binary is on PATH (it is not packaged for
Debian or PyPI: build it from github.com/kubernetes-csi/csi-test)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.lab.kernel import sh  # noqa: E402
from tests.lab.processes import AllInOneProcess  # noqa: E402


def main() -> int:
    binary = shutil.which("csi-sanity")
    if binary is None:
        print("csi-sanity is not on PATH: build it from kubernetes-csi/csi-test and run make sanity again")
        return 2
    sh("modprobe", "-a", "nvmet", "nvmet-tcp", "nvme-tcp", "dm-thin-pool")
    for cmd in (("pvcreate", "-q", "/dev/vda"), ("vgcreate", "-q", "sanity", "/dev/vda"),
                ("lvcreate", "-q", "--type", "thin-pool", "-L", "8G", "-n", "pool", "sanity")):
        sh(cmd[0], "--devices", "/dev/vda", *cmd[1:])
    proc = AllInOneProcess(Path("/tmp/sluice-sanity"), "sanity", "pool")
    proc.start()
    try:
        return subprocess.run([binary, f"--csi.endpoint={proc.endpoint}",
                               "--csi.stagingdir=/tmp/csi-sanity/staging", "--csi.mountdir=/tmp/csi-sanity/mount",
                               "--csi.testvolumesize=67108864", "--ginkgo.v"]).returncode
    finally:
        proc.stop()


if __name__ == "__main__":
    sys.exit(main())
