"""demo/scrape.py: the demo's per-phase figures from two /metrics samples."""

from __future__ import annotations

from demo.scrape import MiB, PhaseMetrics, Sample

CKPT, INFER = "local/v-ckpt", "local/v-infer"


def sample(at: float, ckpt_wbytes: float, infer_rbytes: float, psi: float, reads: float, read_s: float) -> Sample:
    v = {("sluice_node_pod_write_bytes_total", (("pod_uid", "a"), ("volume_id", CKPT))): ckpt_wbytes,
         ("sluice_node_pod_read_bytes_total", (("pod_uid", "b"), ("volume_id", INFER))): infer_rbytes,
         ("sluice_node_pod_io_pressure_seconds_total", (("kind", "some"), ("pod_uid", "b"), ("volume_id", INFER))): psi,
         ("sluice_node_pod_io_pressure_seconds_total", (("kind", "full"), ("pod_uid", "b"), ("volume_id", INFER))): 99,
         ("sluice_node_volume_read_ops_total", (("volume_id", INFER),)): reads,
         ("sluice_node_volume_read_time_seconds_total", (("volume_id", INFER),)): read_s}
    return Sample(at, v)


def test_rates_psi_and_latency_come_from_the_deltas_over_the_phase():
    m = PhaseMetrics.between(sample(100, 0, 0, 1.0, 10, 0.0), sample(110, 80 * MiB, 20 * MiB, 3.5, 1010, 2.0),
                             CKPT, INFER)
    assert m.ckpt_write_mibs == 8.0
    assert m.infer_read_mibs == 2.0
    assert m.infer_psi_some == 0.25          # 2.5 s of "some" stall in 10 s; "full" not mixed in
    assert m.infer_read_ms == 2.0            # 2 s over 1,000 reads


def test_a_phase_without_reads_has_no_latency_rather_than_a_division_error():
    m = PhaseMetrics.between(sample(0, 0, 0, 0, 5, 1), sample(1, 0, 0, 0, 5, 1), CKPT, INFER)
    assert m.infer_read_ms == 0.0 and m.ckpt_write_mibs == 0.0
