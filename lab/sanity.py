"""`make sanity`: the Kubernetes csi-sanity suite against Sluice in all-in-one mode,
inside the lab VM, when a `csi-sanity` binary is on PATH (it is not packaged for
Debian or PyPI: build it from github.com/kubernetes-csi/csi-test).

Runs the suite twice, for the mount and the block access type, each with the
node attach-limit spec (a low --max-volumes-per-node keeps it quick), the
mutable-parameters spec (ControllerModifyVolume with a QoS key) and 64 MiB volumes,
then prints the pass/fail/pending/skip counts of both runs."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.lab.kernel import sh  # noqa: E402
from tests.lab.processes import AllInOneProcess  # noqa: E402

WORK = Path("/tmp/sluice-sanity")
ATTACH_LIMIT = 4
ACCESS_TYPES = ("mount", "block")
SUMMARY = re.compile(r"(\d+) Passed \| (\d+) Failed \| (\d+) Pending \| (\d+) Skipped")


def main(argv: list[str]) -> int:
    """argv: [path to csi-sanity] (the host resolves it: PATH does not reach the guest)."""
    binary = argv[0] if argv else shutil.which("csi-sanity")
    if not binary:
        print("csi-sanity is not on PATH: build it from kubernetes-csi/csi-test and run make sanity again")
        return 2
    sh("modprobe", "-a", "nvmet", "nvmet-tcp", "nvme-tcp", "dm-thin-pool")
    for cmd in (("pvcreate", "-q", "/dev/vda"), ("vgcreate", "-q", "sanity", "/dev/vda"),
                ("lvcreate", "-q", "--type", "thin-pool", "-L", "8G", "-n", "pool", "sanity")):
        sh(cmd[0], "--devices", "/dev/vda", *cmd[1:])
    WORK.mkdir(parents=True, exist_ok=True)
    mutable = WORK / "mutable.yaml"
    mutable.write_text('qos.readIOPS: "100"\n')
    proc = AllInOneProcess(WORK, "sanity", "pool", extra=["--max-volumes-per-node", str(ATTACH_LIMIT)])
    proc.start(timeout=600)  # a loaded TCG guest can take minutes to import and restore
    results = {}
    try:
        for access in ACCESS_TYPES:
            results[access] = run(binary, proc.endpoint, access, mutable)
    finally:
        proc.stop()
    for access, (rc, counts) in results.items():
        print(f"csi-sanity {access}: exit {rc}; " + (
            "passed {} failed {} pending {} skipped {}".format(*counts) if counts else "no summary line"))
    return max(rc for rc, _ in results.values())


def run(binary: str, endpoint: Path, access: str, mutable: Path) -> tuple[int, tuple[str, ...] | None]:
    Path(f"/tmp/csi-sanity/{access}").mkdir(parents=True, exist_ok=True)  # csi-sanity makes only the leaves
    out = subprocess.run([binary, f"--csi.endpoint={endpoint}",
                          f"--csi.stagingdir=/tmp/csi-sanity/{access}/staging",
                          f"--csi.mountdir=/tmp/csi-sanity/{access}/mount",
                          "--csi.testvolumesize=67108864", f"--csi.testvolumeaccesstype={access}",
                          "--csi.testnodevolumeattachlimit", f"--csi.testvolumemutableparameters={mutable}",
                          "--ginkgo.v"], capture_output=True, text=True)
    sys.stdout.write(out.stdout[-20000:])
    sys.stderr.write(out.stderr[-5000:])
    found = SUMMARY.findall(re.sub(r"\x1b\[[0-9;]*m", "", out.stdout))  # ginkgo colours its summary
    return out.returncode, found[-1] if found else None


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
