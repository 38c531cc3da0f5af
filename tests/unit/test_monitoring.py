"""deploy/monitoring's alert rules: valid for Prometheus (`promtool check rules`) and
firing when they should on synthetic series (`promtool test rules`)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.prometheus_rules import rule_groups, write_rules

PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian's prometheus package) is not installed")

ALERTS = {"SluicePoolDataFillHigh", "SluicePoolDataFillCritical", "SluicePoolMetadataFillHigh",
          "SluicePoolMetadataFillCritical", "SluicePoolUnreadable", "SluiceVolumeAbnormal", "SluicePathDown",
          "SluiceLimitNotInForce", "SluiceTargetUnreachable", "SluiceOrphanedDelete"}


def test_the_rules_pass_promtool_check(tmp_path):
    rules = write_rules(tmp_path / "rules.yml")
    out = subprocess.run([PROMTOOL, "check", "rules", str(rules)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in out.stdout


def test_every_alert_has_a_severity_summary_and_runbook():
    rules = [r for g in rule_groups()["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules} == ALERTS
    for rule in rules:
        assert rule["labels"]["severity"] in ("info", "warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and len(rule["annotations"]["runbook"]) > 80, rule["alert"]


POOL = 'sluice_agent_pool_{}{{target="t1",pool="pool",instance="n1:9812"}}'
TESTS = {
    "rule_files": ["rules.yml"],
    "evaluation_interval": "1m",
    "tests": [{
        "interval": "1m",
        "input_series": [
            # data fill climbs 0.80 -> 0.88 (past high) -> 0.96 (past critical)
            {"series": POOL.format("data_fill_ratio"), "values": "0.80x4 0.88x9 0.96x9"},
            {"series": POOL.format("metadata_fill_ratio"), "values": "0.10x22"},
            {"series": POOL.format("fill_mark_ratio").replace("}", ',mark="high"}'), "values": "0.85x22"},
            {"series": POOL.format("fill_mark_ratio").replace("}", ',mark="critical"}'), "values": "0.95x22"},
            {"series": 'sluice_node_pod_limits_in_force{volume_id="v1",pod_uid="p1",pvc_name="",'
                       'pvc_namespace=""}', "values": "1x4 0x10"},
            {"series": 'sluice_controller_target_up{target="t2",instance="c:9810"}', "values": "1 1 0x10"},
        ],
        "alert_rule_test": [
            {"eval_time": "4m", "alertname": "SluicePoolDataFillHigh", "exp_alerts": []},
            {"eval_time": "11m", "alertname": "SluicePoolDataFillHigh",
             "exp_alerts": [{"exp_labels": {"severity": "warning", "target": "t1", "pool": "pool"},
                             "exp_annotations": {"summary": "Thin pool pool on t1 is 88% full (data)"}}]},
            {"eval_time": "11m", "alertname": "SluicePoolDataFillCritical", "exp_alerts": []},
            {"eval_time": "17m", "alertname": "SluicePoolDataFillCritical",
             "exp_alerts": [{"exp_labels": {"severity": "critical", "target": "t1", "pool": "pool"},
                             "exp_annotations": {"summary": "Thin pool pool on t1 is 96% full (data): "
                                                            "writes are at risk"}}]},
            {"eval_time": "17m", "alertname": "SluicePoolMetadataFillHigh", "exp_alerts": []},
            {"eval_time": "10m", "alertname": "SluiceLimitNotInForce",
             "exp_alerts": [{"exp_labels": {"severity": "warning", "volume_id": "v1", "pod_uid": "p1"}}]},
            {"eval_time": "5m", "alertname": "SluiceTargetUnreachable",
             "exp_alerts": [{"exp_labels": {"severity": "critical", "target": "t2"}}]},
        ],
    }],
}


def test_the_alerts_fire_on_synthetic_series(tmp_path):
    """Summaries are checked where given (else dropped); runbooks are static text."""
    groups = rule_groups()
    expected = {t["alertname"] for t in TESTS["tests"][0]["alert_rule_test"]
                if any("exp_annotations" in a for a in t["exp_alerts"])}
    for rule in (r for g in groups["groups"] for r in g["rules"]):
        keep = ("summary",) if rule["alert"] in expected else ()
        rule["annotations"] = {k: v for k, v in rule["annotations"].items() if k in keep}
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(groups, sort_keys=False))
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(TESTS, sort_keys=False))
    out = subprocess.run([PROMTOOL, "test", "rules", "tests.yml"], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
