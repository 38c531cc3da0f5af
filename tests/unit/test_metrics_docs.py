"""README's metrics section lists exactly what the collectors export, with the labels."""

from __future__ import annotations

import re
from pathlib import Path

from csi_driver import metrics as driver_metrics
from csi_driver.node.metrics import NodeCollector
from csi_driver.node.staging import StagingStore
from csi_driver.targets import Targets
from nvme_target import metrics as agent_metrics
from nvme_target.agent import protection
from tests.fakes.memory_backend import MemoryBackend

README = Path(__file__).resolve().parents[2] / "README.md"
VOLUME = ("volume_id", "pvc_namespace", "pvc_name")


def documented() -> dict[str, set[str]]:
    section = README.read_text().split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    out = {}
    for name, labels in re.findall(r"^\| `(sluice_\w+)` \| ([^|]*) \|", section, flags=re.M):
        names = set()
        for label in (x.strip() for x in labels.split(",") if x.strip()):
            names |= set(VOLUME) if label == "V" else {label}
        out[name] = names
    return out


def exported(tmp_path) -> dict[str, set[str]]:
    families = [*NodeCollector(StagingStore(tmp_path), tmp_path).describe(),
                *agent_metrics.AgentCollector(MemoryBackend(), "t", "p").describe(),
                *driver_metrics.TargetsCollector(Targets([])).describe(),
                *protection.ProtectionCollector(protection.Protection(MemoryBackend()), "t").describe()]
    out = {f.name + ("_total" if f.type == "counter" else ""): set(f._labelnames) for f in families}
    for metric in (driver_metrics.CALLS, driver_metrics.DURATION, driver_metrics.ORPHANED_DELETES,
                   agent_metrics.RESTORES, agent_metrics.REPLAYS, protection.CHANGES):
        family = metric.describe()[0]
        out[family.name + ("_total" if family.type == "counter" else "")] = set(metric._labelnames)
    return out


def test_the_readme_lists_every_metric_with_its_labels(tmp_path):
    docs, real = documented(), exported(tmp_path)
    assert len(real) > 40
    assert sorted(set(real) - set(docs)) == [], "exported but not in README.md's Metrics section"
    assert sorted(set(docs) - set(real)) == [], "in README.md's Metrics section but not exported"
    wrong = {name: (docs[name], labels) for name, labels in real.items() if docs[name] != labels}
    assert wrong == {}, "labels differ (README, exported)"


def test_the_names_follow_prometheus_conventions(tmp_path):
    for name in exported(tmp_path):
        assert name.startswith("sluice_"), name
        assert not re.search(r"_(ms|milliseconds|percent|kib|mib)(_|$)", name), f"{name}: base units"
