"""Sluice's own processes, started the way production starts them, for lab tests."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import grpc

from nvme_target.agent.client import AgentClient
from tests.lab.kernel import wait_for

START_SECONDS = 300  # generous: a TCG guest on a loaded 2-core host can take minutes to start one


class _Process:
    name = "process"

    def __init__(self, argv: list[str], log: Path) -> None:
        self.argv = argv
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = START_SECONDS) -> None:
        with self.log.open("a") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=log)
        try:
            wait_for(self._ready, timeout, f"the {self.name} to serve", interval=0.2)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; log: {self.log.read_text()[-3000:]}") from None

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.log.read_text()[-3000:]}")
        try:
            return self.ready()
        except Exception:
            return False

    def ready(self) -> bool:
        raise NotImplementedError

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # in case a test froze it
            self.proc.terminate()
            self.proc.wait(timeout=60)

    def freeze(self) -> None:
        """SIGSTOP: the process keeps its sockets but answers nothing (a black hole)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)


class AgentProcess(_Process):
    """`python -m nvme_target` on a VG of the lab, on one portal."""

    name = "target agent"

    def __init__(self, workdir: Path, vg: str, pool: str, pv: str, portal: str = "lo:4420",
                 target_id: str = "lab-target", zone: str = "lab", metrics_port: int = 0) -> None:
        """`metrics_port`: serve /metrics on 127.0.0.1:PORT (0: off)."""
        workdir.mkdir(parents=True, exist_ok=True)
        self.socket = workdir / "agent.sock"
        super().__init__([sys.executable, "-m", "nvme_target", "--vg", vg, "--pool", pool, "--pv", pv,
                          "--state-dir", str(workdir / "state"), "--socket", str(self.socket),
                          "--portal", portal, "--target-id", target_id,
                          "--topology", f"csi.sluice.dev/zone={zone}", "--overcommit-ratio", "2",
                          *_metrics_flags(metrics_port)],
                         workdir / "agent.log")
        self.target_id, self.zone = target_id, zone
        self.client = AgentClient(f"unix:{self.socket}", timeout=300)

    def ready(self) -> bool:
        return self.client.health().ready

    def config_entry(self) -> dict:
        return {"id": self.target_id, "endpoint": f"unix:{self.socket}",
                "topology": {"csi.sluice.dev/zone": self.zone}}

    def empty(self) -> None:
        """Unexport and delete everything this agent holds (between tests)."""
        for export in self.client.list_exports():
            self.client.unexport_volume(export.volume_id)
        for snap in self.client.list_snapshots():
            self.client.delete_snapshot(snap.id)
        for vol in self.client.list_volumes():
            self.client.delete_volume(vol.id)


class ControllerProcess(_Process):
    """`python -m csi_driver --mode controller` over the given agents."""

    name = "csi controller"

    def __init__(self, workdir: Path, agents: list[AgentProcess], extra: list[str] = (),
                 metrics_port: int = 0) -> None:
        """`extra`: more controller flags (e.g. --target-read-timeout)."""
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / "targets.json"
        config.write_text(json.dumps({"targets": [a.config_entry() for a in agents]}))
        self.endpoint = workdir / "csi.sock"
        super().__init__([sys.executable, "-m", "csi_driver", "--mode", "controller",
                          "--endpoint", f"unix://{self.endpoint}", "--targets-config", str(config), *extra,
                          *_metrics_flags(metrics_port)],
                         workdir / "controller.log")
        self.channel: grpc.Channel | None = None

    def ready(self) -> bool:
        return csi_probe(self.endpoint)


class NodeProcess(_Process):
    """`python -m csi_driver --mode node` with its own host identity (a second "node")."""

    name = "csi node plugin"

    def __init__(self, workdir: Path, zone: str = "lab", agents: list[AgentProcess] = (),
                 cgroup_root: Path | None = None, metrics_port: int = 0) -> None:
        """`agents`: watched for live limit changes (--targets-config)."""
        workdir.mkdir(parents=True, exist_ok=True)
        self.endpoint = workdir / "csi.sock"
        extra = []
        if agents:
            config = workdir / "targets.json"
            config.write_text(json.dumps({"targets": [a.config_entry() for a in agents]}))
            extra += ["--targets-config", str(config)]
        if cgroup_root is not None:
            extra += ["--cgroup-root", str(cgroup_root)]
        extra += _metrics_flags(metrics_port)
        super().__init__([sys.executable, "-m", "csi_driver", "--mode", "node",
                          "--endpoint", f"unix://{self.endpoint}", "--nvme-config-dir", str(workdir / "nvme"),
                          "--node-state-dir", str(workdir / "state"),
                          "--node-topology", f"csi.sluice.dev/zone={zone}", *extra],
                         workdir / "node.log")

    def ready(self) -> bool:
        return csi_probe(self.endpoint)


class AllInOneProcess(_Process):
    """`python -m csi_driver --mode all` with its in-process target on a lab VG."""

    name = "all-in-one driver"

    def __init__(self, workdir: Path, vg: str, pool: str, pv: str = "/dev/vda", extra: list[str] = (),
                 metrics_port: int = 0) -> None:
        """`extra`: more driver flags (e.g. --max-volumes-per-node); `metrics_port` as NodeProcess."""
        self.endpoint = workdir / "csi.sock"
        super().__init__([sys.executable, "-m", "csi_driver", "--mode", "all",
                          "--endpoint", f"unix://{self.endpoint}", "--target-vg", vg, "--target-pool", pool,
                          "--target-pv", pv, "--target-state-dir", str(workdir / "target"),
                          "--target-topology", "csi.sluice.dev/zone=solo",
                          "--nvme-config-dir", str(workdir / "nvme"), "--node-state-dir", str(workdir / "node"),
                          "--node-topology", "csi.sluice.dev/zone=solo", *extra, *_metrics_flags(metrics_port)],
                         workdir / "all.log")

    def ready(self) -> bool:
        return csi_probe(self.endpoint)


def _metrics_flags(port: int) -> list[str]:
    return ["--metrics-port", str(port), "--metrics-bind", "127.0.0.1"] if port else []


def csi_probe(endpoint: Path, timeout: float = 10) -> bool:
    """Whether a CSI driver answers Probe with ready=true on its socket."""
    from sluice_proto import csi_pb2, csi_pb2_grpc

    channel = grpc.insecure_channel(f"unix:{endpoint}")
    try:
        return csi_pb2_grpc.IdentityStub(channel).Probe(csi_pb2.ProbeRequest(), timeout=timeout).ready.value
    finally:
        channel.close()
