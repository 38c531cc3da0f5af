"""Metrics a platform team can alert on, checked by a real Prometheus server: it scrapes
the node plugin, the agent and the controller while fio writes in a pod cgroup under a
write cap; PromQL rate() of the volume's write bytes matches fio's own figure and the
cap within 5%; then the test fills the (small) thin pool past the high mark and the
server's own rule evaluation fires SluicePoolDataFillHigh (and not the critical one).
"""

from __future__ import annotations

import time

import grpc
import pytest

from tests.conformance.client import MiB, Csi, block_cap
from tests.lab.attach import Attached
from tests.lab.kernel import lvm, lvs_json, sh, wait_for
from tests.lab.pods import make_pod
from tests.lab.processes import AgentProcess, ControllerProcess, NodeProcess
from tests.lab.prometheus import PrometheusServer
from tests.lab.test_qos import device_of, fio

pytestmark = [pytest.mark.lab, pytest.mark.timing]
DISK, VG, POOL = "/dev/vdb", "metricsvg", "pool"
POOL_MIB, VOLUME_MIB = 128, 120   # written whole: ~94% of the pool, past high (85), under critical (95)
CAP = 4 * MiB
PORTS = {"node": 19811, "agent": 19812, "controller": 19810}


@pytest.fixture(scope="module")
def small_pool(kernel_modules):
    sh("wipefs", "-a", DISK)
    lvm("pvcreate", "-q", DISK)
    lvm("vgcreate", "-q", VG, DISK)
    lvm("lvcreate", "-q", "--type", "thin-pool", "-L", f"{POOL_MIB}M", "-n", POOL, VG)
    yield VG, POOL
    lvm("vgremove", "-q", "-f", VG, check=False)
    lvm("pvremove", "-q", "-f", DISK, check=False)
    sh("wipefs", "-a", DISK, check=False)


@pytest.fixture(scope="module")
def scraped(small_pool, tmp_path_factory):
    vg, pool = small_pool
    work = tmp_path_factory.mktemp("metrics")
    agent = AgentProcess(work / "agent", vg, pool, DISK, target_id="metrics-t", zone="m",
                         metrics_port=PORTS["agent"])
    controller = ControllerProcess(work / "controller", [agent], metrics_port=PORTS["controller"])
    node = NodeProcess(work / "node", zone="m", agents=[agent], metrics_port=PORTS["node"])
    prometheus = PrometheusServer(work / "prometheus", {job: f"127.0.0.1:{port}" for job, port in PORTS.items()})
    started = []
    try:
        for proc in (agent, controller, node, prometheus):
            proc.start()
            started.append(proc)
        channels = [grpc.insecure_channel(f"unix:{p.endpoint}") for p in (controller, node)]
        yield Csi(channels[0]), Csi(channels[1]), agent, prometheus
        for channel in channels:
            channel.close()
    finally:
        for proc in reversed(started):
            if proc is agent:
                agent.empty()
            proc.stop()
        for proc in started:  # for a failure's story (pytest -s)
            log = getattr(proc, "log", None) or proc.workdir / "prometheus.log"
            print(f"--- {log}\n" + "\n".join(log.read_text().splitlines()[-12:]))


def test_prometheus_sees_the_cap_fio_and_a_filling_pool(scraped):
    ctl, node, agent, prom = scraped
    try:
        wait_for(lambda: set(prom.targets().values()) == {"up"}, 120, "every /metrics endpoint scraped", interval=1)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}: {prom.targets()}") from None
    wait_for(lambda: prom.query('sluice_controller_target_up{target="metrics-t"} == 1'), 180,
             "the controller to report the target up", interval=1)
    pod = make_pod("systemd", "burstable")
    vol = ctl.create("pvc-metrics", size=VOLUME_MIB * MiB, caps=[block_cap()], parameters={"qos.writeBPS": "4Mi"})
    vid = vol.volume_id
    try:
        with Attached(ctl, node, vol, block_cap(), pod_uid=pod.uid) as attached:
            device = device_of(attached)
            wait_for(lambda: prom.query(f'sluice_node_pod_limits_in_force{{volume_id="{vid}"}} == 1'), 30,
                     "the node plugin to report the cap in force")
            assert prom.scalar(f'sluice_node_pod_io_max{{volume_id="{vid}",limit="wbps"}}') == CAP
            assert prom.scalar(f'sluice_node_volume_limit_wanted{{volume_id="{vid}",limit="wbps"}}') == CAP

            job = fio(pod, attached.target, "write", "64k", 16)   # 2 s ramp + 16 s measured
            ended = time.time()
            fio_rate = job["write"]["bw_bytes"]
            # fio writes for its last 16 s before `ended` (its start-up in the pod takes a
            # variable few seconds under TCG, so its launch time does not say when writing began):
            # 12 s ending 2 s before it exited are inside its steady state, ~6 scrapes
            window, at = 12, ended - 2
            time.sleep(5)  # the last scrapes of the window are in
            rate = prom.scalar(f'rate(sluice_node_volume_write_bytes_total{{volume_id="{vid}"}}[{window}s])', at)
            pod_rate = prom.scalar(f'rate(sluice_node_pod_write_bytes_total{{volume_id="{vid}"}}[{window}s])', at)
            on_target = vid.split("/", 1)[1]  # the agent labels its own id, with target="metrics-t"
            target_rate = prom.scalar(f'rate(sluice_agent_volume_write_bytes_total{{target="metrics-t",'
                                      f'volume_id="{on_target}"}}[{window}s])', at)
            psi = prom.query(f'sluice_node_pod_io_pressure_seconds_total{{volume_id="{vid}"}}')
            print(f"METRICS-RATE window={window}s promql={rate:.0f} pod={pod_rate:.0f} target={target_rate:.0f} "
                  f"fio={fio_rate:.0f} cap={CAP} promql/fio={rate / fio_rate:.3f} promql/cap={rate / CAP:.3f}")
            assert abs(rate / fio_rate - 1) <= 0.05, f"PromQL rate {rate:.0f} B/s, fio {fio_rate:.0f} B/s"
            assert abs(rate / CAP - 1) <= 0.05, f"PromQL rate {rate:.0f} B/s against a cap of {CAP}"
            assert abs(pod_rate / rate - 1) <= 0.05, "the pod's io.stat agrees with the device's stat"
            assert target_rate > 0.5 * CAP, "the target side saw the writes too"
            assert {labels["kind"] for labels, _ in psi} == {"some", "full"}
            assert prom.scalar(f'sluice_node_volume_abnormal{{volume_id="{vid}"}}') == 0
            assert prom.scalar(f'sluice_node_path_up{{volume_id="{vid}"}}') == 1
            assert prom.scalar('sluice_controller_target_up{target="metrics-t"}') == 1
            assert prom.scalar('sum(sluice_csi_calls_total{method="CreateVolume",code="OK"})') >= 1

            assert "SluicePoolDataFillHigh" not in prom.firing()
            sh("dd", "if=/dev/zero", f"of=/dev/{device}", "bs=1M", f"count={VOLUME_MIB}", "oflag=direct",
               timeout=300)  # outside the pod: not capped
            lvs = {lv["lv_name"]: lv for lv in lvs_json(VG)}
            data_percent = float(lvs[POOL]["data_percent"])
            wait_for(lambda: "SluicePoolDataFillHigh" in prom.firing(), 120, "SluicePoolDataFillHigh to fire")
            fill = prom.scalar(f'sluice_agent_pool_data_fill_ratio{{pool="{POOL}"}}')
            print(f"METRICS-FILL lvs data_percent={data_percent} metric={fill:.4f} firing={sorted(prom.firing())}")
            assert abs(fill * 100 - data_percent) < 1.0
            assert 85 <= data_percent < 95 and "SluicePoolDataFillCritical" not in prom.firing()
            rss = prom.scalar('process_resident_memory_bytes{job="node"}')
            scrape = prom.scalar('scrape_duration_seconds{job="node"}')
            print(f"METRICS-NODE rss={rss / MiB:.1f}MiB scrape={scrape * 1000:.1f}ms (1 staged volume)")
    finally:
        ctl.delete(vid)
        pod.remove()
