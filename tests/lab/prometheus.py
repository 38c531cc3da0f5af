"""A real Prometheus server (Debian's `prometheus`) on loopback for lab tests: scrapes
the given endpoints every 2 s and evaluates Sluice's alert rules every second."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

from tests.lab.kernel import wait_for
from tests.prometheus_rules import write_rules


class PrometheusServer:
    def __init__(self, workdir: Path, jobs: dict[str, str], port: int = 19090, rule_for: str = "3s") -> None:
        """`jobs`: job name -> host:port to scrape; `rule_for` replaces every rule's `for`."""
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir, self.port = workdir, port
        self.url = f"http://127.0.0.1:{port}"
        rules = write_rules(workdir / "rules.yml", rule_for)
        # 2 s: a scrape of a Python process in the TCG guest on a loaded host can take over 1 s
        config = {"global": {"scrape_interval": "2s", "evaluation_interval": "1s", "scrape_timeout": "2s"},
                  "rule_files": [str(rules)],
                  "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [address]}]}
                                     for job, address in jobs.items()]}
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        binary = shutil.which("prometheus") or "/usr/bin/prometheus"
        with (self.workdir / "prometheus.log").open("w") as log:
            self.proc = subprocess.Popen(
                [binary, f"--config.file={self.workdir / 'prometheus.yml'}",
                 f"--storage.tsdb.path={self.workdir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=log, stderr=log)
        wait_for(self._ready, 120, "prometheus to be ready", interval=0.5)

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"prometheus exited: {(self.workdir / 'prometheus.log').read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as reply:
                return reply.status == 200
        except OSError:
            return False

    def api(self, path: str, **params) -> dict:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=30) as reply:
            body = json.loads(reply.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, promql: str, at: float | None = None) -> list[tuple[dict, float]]:
        params = {"query": promql, **({"time": f"{at:.3f}"} if at is not None else {})}
        return [(r["metric"], float(r["value"][1])) for r in self.api("query", **params)["result"]]

    def scalar(self, promql: str, at: float | None = None) -> float:
        result = self.query(promql, at)
        assert len(result) == 1, f"{promql}: {result}"
        return result[0][1]

    def firing(self) -> set[str]:
        return {a["labels"]["alertname"] for a in self.api("alerts")["alerts"] if a["state"] == "firing"}

    def targets(self) -> dict[str, str]:
        """job -> "up", or the health and the last scrape's error."""
        return {t["labels"]["job"]: t["health"] if t["health"] == "up" else f"{t['health']}: {t['lastError']}"
                for t in self.api("targets")["activeTargets"]}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=60)
