"""How Sluice's four limits map onto SPDK's, and which side enforces what.

SPDK limits a bdev with rw_ios_per_sec (reads and writes together, rounded UP to a
multiple of 1000), rw_mbytes_per_sec, r_mbytes_per_sec and w_mbytes_per_sec (whole
MiB/s). Sluice's node enforces the exact four limits per pod with io.max; the target
adds a ceiling that never undercuts them, so a host that escapes its cgroup (or runs no
Sluice node) still cannot take more:

    qos.readBPS   -> r_mbytes_per_sec = ceil(readBPS / MiB)
    qos.writeBPS  -> w_mbytes_per_sec = ceil(writeBPS / MiB)
    qos.readIOPS + qos.writeIOPS -> rw_ios_per_sec = their sum rounded up to 1000,
                     only when both are set (one unlimited side leaves no combined cap)
    rw_mbytes_per_sec stays 0 (unlimited); 0 means unlimited for every key.
"""

from __future__ import annotations

from nvme_target.model import QoS
from sluice_common.units import MiB, ceil_div, round_up
KEYS = ("rw_ios_per_sec", "rw_mbytes_per_sec", "r_mbytes_per_sec", "w_mbytes_per_sec")


def spdk_limits(qos: QoS) -> dict[str, int]:
    rw_ios = 0
    if qos.read_iops and qos.write_iops:
        rw_ios = round_up(qos.read_iops + qos.write_iops, 1000)
    return {"rw_ios_per_sec": rw_ios, "rw_mbytes_per_sec": 0,
            "r_mbytes_per_sec": ceil_div(qos.read_bps, MiB) if qos.read_bps else 0,
            "w_mbytes_per_sec": ceil_div(qos.write_bps, MiB) if qos.write_bps else 0}
