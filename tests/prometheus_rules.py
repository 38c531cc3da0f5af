"""The alert rules of deploy/monitoring/prometheusrule.yaml as a plain Prometheus rule
file (what prometheus-operator hands the server), for promtool and the lab's server."""

from __future__ import annotations

from pathlib import Path

import yaml

RULE = Path(__file__).resolve().parents[1] / "deploy" / "monitoring" / "prometheusrule.yaml"


def rule_groups(for_override: str | None = None) -> dict:
    """{"groups": [...]} from the PrometheusRule; `for_override` replaces every `for`
    (the lab cannot wait five minutes)."""
    groups = yaml.safe_load(RULE.read_text())["spec"]["groups"]
    if for_override is not None:
        for group in groups:
            for rule in group["rules"]:
                if "for" in rule:
                    rule["for"] = for_override
    return {"groups": groups}


def write_rules(path: Path, for_override: str | None = None) -> Path:
    path.write_text(yaml.safe_dump(rule_groups(for_override), sort_keys=False))
    return path
