"""What Sluice's own /metrics said during each phase of the demo, read from the real endpoint.

`Scrape(url).sample()` reads every sample once; `PhaseMetrics.between(before, after)` turns
two samples into the figures a platform engineer would graph for the phase: each pod's write
rate and read rate on its volume, the inference pod's io PSI (share of the phase during which
some of its tasks stalled on I/O), and the inference volume's mean read latency from the node's
device counters."""

from __future__ import annotations

import time
import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

MiB = 1 << 20

Key = tuple[str, tuple[tuple[str, str], ...]]


@dataclass(frozen=True)
class Sample:
    taken_at: float
    values: dict[Key, float]

    def get(self, name: str, **labels: str) -> float:
        """The sum over every series of `name` whose labels include `labels` (0 when none)."""
        want = set(labels.items())
        return sum(v for (n, ls), v in self.values.items() if n == name and want <= set(ls))


class Scrape:
    def __init__(self, url: str) -> None:
        self.url = url

    def sample(self) -> Sample:
        with urllib.request.urlopen(self.url, timeout=10) as resp:
            text = resp.read().decode()
        values: dict[Key, float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                values[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return Sample(time.monotonic(), values)


@dataclass(frozen=True)
class PhaseMetrics:
    ckpt_write_mibs: float     # the checkpoint pod's writes to its volume (io.stat wbytes)
    infer_read_mibs: float     # the inference pod's reads (io.stat rbytes)
    infer_psi_some: float      # share of the phase with some inference task stalled on I/O (0-1)
    infer_read_ms: float       # mean read latency at the node's device (read time / reads)

    @staticmethod
    def between(before: Sample, after: Sample, ckpt: str, infer: str) -> PhaseMetrics:
        span = max(after.taken_at - before.taken_at, 1e-6)

        def delta(name: str, **labels: str) -> float:
            return after.get(name, **labels) - before.get(name, **labels)

        reads = delta("sluice_node_volume_read_ops_total", volume_id=infer)
        read_s = delta("sluice_node_volume_read_time_seconds_total", volume_id=infer)
        return PhaseMetrics(
            ckpt_write_mibs=delta("sluice_node_pod_write_bytes_total", volume_id=ckpt) / MiB / span,
            infer_read_mibs=delta("sluice_node_pod_read_bytes_total", volume_id=infer) / MiB / span,
            infer_psi_some=delta("sluice_node_pod_io_pressure_seconds_total", volume_id=infer, kind="some") / span,
            infer_read_ms=1000 * read_s / reads if reads else 0.0)
