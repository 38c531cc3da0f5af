"""List the I/O limits in force on this node: per volume and pod, the limits wanted, the
io.max line the kernel holds and io.stat for the device; with latency protection, the
dynamic ceiling in force, why it last changed and the volume's measured I/O.

    python -m csi_driver.node.limits_report [--node-state-dir DIR] [--cgroup-root DIR] [--json]

Run it in the node plugin's container (kubectl exec ds/sluice-node -c sluice -- ...).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from csi_driver.node.limits import PodLimits, load_protection
from csi_driver.node.staging import StagingStore


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m csi_driver.node.limits_report", description=__doc__.splitlines()[0])
    p.add_argument("--node-state-dir", type=Path, default=Path("/var/lib/sluice/node"))
    p.add_argument("--cgroup-root", type=Path, default=Path("/sys/fs/cgroup"))
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    ns = p.parse_args(argv)
    rows = PodLimits(ns.cgroup_root).report(StagingStore(ns.node_state_dir).all())
    protection = load_protection(ns.node_state_dir).get("volumes", {})
    if ns.json:
        for row in rows:
            print(json.dumps(asdict(row) | {"protection": protection.get(row.volume_id, {})}, sort_keys=True))
        return 0
    if not rows:
        print("no volumes published to pods on this node")
        return 0
    for row in rows:
        wanted = " ".join(f"{k}={v}" for k, v in sorted(row.wanted.items())) or "unlimited"
        print(f"{row.volume_id}  pod {row.pod_uid}  device {row.device or '-'}\n"
              f"  cgroup   {row.cgroup}\n  wanted   {wanted}\n"
              f"  io.max   {row.io_max or '(no limit)'}\n  io.stat  {row.io_stat or '-'}")
        print(protection_lines(protection.get(row.volume_id, {})), end="")
    return 0


def protection_lines(seen: dict) -> str:
    """The latency protection lines of one volume ("" when the node knows nothing of it)."""
    out = ""
    if "latency_us" in seen:
        out += (f"  measured {seen['latency_us']:.0f} us/io  {seen['bytes_per_second'] / 2**20:.1f} MiB/s  "
                f"{seen['ios_per_second']:.0f} io/s (last report window)\n")
    if seen.get("ceiling"):
        out += "  ceiling  " + " ".join(f"{k}={v}" for k, v in sorted(seen["ceiling"].items())) + " (dynamic)\n"
    if seen.get("reason"):
        out += f"  reason   {seen['reason']}\n"
    return out


if __name__ == "__main__":
    sys.exit(main())
