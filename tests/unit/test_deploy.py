"""deploy/ as a platform team applies it: every manifest valid against the Kubernetes
schemas (offline, kubernetes-validate, strict), every flag given to a Sluice container
one that Sluice accepts, the kustomization complete, and the Dockerfile lint-clean."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from csi_driver import settings as driver_settings
from csi_driver.launch import split_mode
from nvme_target import settings as agent_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S_VERSION = "1.34.0"
SLUICE_IMAGE = "ghcr.io/sluice-dev/sluice"
# the snapshot CRD is not a built-in schema: its spec, from external-snapshotter's
# snapshot.storage.k8s.io/v1 VolumeSnapshotClass CRD
SNAPSHOT_CLASS_FIELDS = {"apiVersion", "kind", "metadata", "driver", "deletionPolicy", "parameters"}
# nor is the group snapshot one: groupsnapshot.storage.k8s.io/v1beta1 VolumeGroupSnapshotClass,
# the version csi-snapshotter v8.3.0 serves
GROUP_SNAPSHOT_CLASS_API = "groupsnapshot.storage.k8s.io/v1beta1"


def documents() -> list[tuple[str, dict]]:
    docs = []
    for path in sorted(DEPLOY.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((str(path.relative_to(ROOT)), doc))
    return docs


DOCS = [d for d in documents() if d[1].get("kind") != "Kustomization"]


@pytest.mark.parametrize("where, doc", DOCS, ids=[f"{w}:{d['kind']}/{d['metadata']['name']}" for w, d in DOCS])
def test_every_manifest_is_valid_kubernetes(where, doc):
    if doc["kind"] == "VolumeSnapshotClass":
        assert doc["apiVersion"] == "snapshot.storage.k8s.io/v1"
        assert set(doc) <= SNAPSHOT_CLASS_FIELDS and doc["driver"] == "csi.sluice.dev"
        assert doc["deletionPolicy"] in ("Delete", "Retain")
        return
    if doc["kind"] == "VolumeGroupSnapshotClass":
        assert doc["apiVersion"] == GROUP_SNAPSHOT_CLASS_API
        assert set(doc) <= SNAPSHOT_CLASS_FIELDS and doc["driver"] == "csi.sluice.dev"
        assert doc["deletionPolicy"] in ("Delete", "Retain")
        return
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_kustomization_lists_every_base_manifest():
    kustomization = yaml.safe_load((DEPLOY / "base" / "kustomization.yaml").read_text())
    files = sorted(p.name for p in (DEPLOY / "base").glob("*.yaml") if p.name != "kustomization.yaml")
    assert kustomization["resources"] == files


def sluice_containers() -> list[tuple[str, dict]]:
    found = []
    for where, doc in DOCS:
        spec = doc.get("spec", {}).get("template", {}).get("spec", {})
        for container in spec.get("containers", []):
            if container["image"].startswith(SLUICE_IMAGE):
                found.append((f"{where}:{container['name']}", container))
    return found


@pytest.mark.parametrize("where, container", sluice_containers(), ids=[w for w, _ in sluice_containers()])
def test_every_flag_passed_to_sluice_is_one_it_accepts(where, container):
    assert "command" not in container, f"{where}: the image's entry point (sluice) chooses by --mode"
    mode, rest = split_mode(container.get("args", []))
    assert mode in ("controller", "node", "all", "agent"), f"{where}: --mode={mode}"
    parser = (agent_settings if mode == "agent" else driver_settings).parser()
    args = rest if mode == "agent" else container["args"]
    try:
        parser.parse_args(args)
    except (SystemExit, Exception) as exc:  # argparse exits on an unknown flag
        pytest.fail(f"{where}: {args} rejected: {exc}")


def test_the_flag_check_catches_a_wrong_flag():
    parser = driver_settings.parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["--mode=node", "--cgroup-rot=/x"])


def test_the_node_plugin_and_driver_object_are_what_sluice_needs():
    kinds = {(d["kind"], d["metadata"]["name"]): d for _, d in DOCS}
    driver = kinds[("CSIDriver", "csi.sluice.dev")]["spec"]
    assert driver["attachRequired"] and driver["podInfoOnMount"] and driver["storageCapacity"]
    assert driver["volumeLifecycleModes"] == ["Persistent"] and driver["fsGroupPolicy"] == "File"
    node = kinds[("DaemonSet", "sluice-node")]["spec"]["template"]["spec"]
    sluice = next(c for c in node["containers"] if c["name"] == "sluice")
    mounts = {m["mountPath"]: m for m in sluice["volumeMounts"]}
    assert mounts["/var/lib/kubelet"]["mountPropagation"] == "Bidirectional"
    assert {"/dev", "/sys", "/run/udev", "/etc/nvme", "/host/sys/fs/cgroup"} <= set(mounts)
    assert "--cgroup-root=/host/sys/fs/cgroup" in sluice["args"]
    controller = kinds[("Deployment", "sluice-controller")]["spec"]
    assert controller["replicas"] == 2
    provisioner = next(c for c in controller["template"]["spec"]["containers"] if c["name"] == "csi-provisioner")
    assert {"--feature-gates=Topology=true", "--extra-create-metadata", "--enable-capacity",
            "--leader-election"} <= set(provisioner["args"])


def test_the_snapshotter_takes_group_snapshots():
    kinds = {(d["kind"], d["metadata"]["name"]): d for _, d in DOCS}
    controller = kinds[("Deployment", "sluice-controller")]["spec"]["template"]["spec"]
    snapshotter = next(c for c in controller["containers"] if c["name"] == "csi-snapshotter")
    assert "--feature-gates=CSIVolumeGroupSnapshot=true" in snapshotter["args"]
    rules = kinds[("ClusterRole", "sluice-snapshotter")]["rules"]
    granted = {(r, v) for rule in rules if rule["apiGroups"] == ["groupsnapshot.storage.k8s.io"]
               for r in rule["resources"] for v in rule["verbs"]}
    assert {("volumegroupsnapshotclasses", "watch"), ("volumegroupsnapshotcontents", "update"),
            ("volumegroupsnapshotcontents/status", "patch")} <= granted
    assert ("VolumeGroupSnapshotClass", "sluice-group-snapshots") in kinds


def test_the_dockerfile_is_lint_clean():
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run([str(hadolint), str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_catches_an_unknown_field():
    bad = {"apiVersion": "storage.k8s.io/v1", "kind": "CSIDriver", "metadata": {"name": "x"},
           "spec": {"attachRequired": True, "podInfoOnMoun": True}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_one_entry_point_runs_every_mode():
    assert split_mode(["--mode=agent", "--vg=x"]) == ("agent", ["--vg=x"])
    assert split_mode(["--vg", "x", "--mode", "node"]) == ("node", ["--vg", "x"])
    sluice = Path(sys.executable).parent / "sluice"
    for mode, expect in (("agent", "--spdk-base-bdev"), ("node", "--cgroup-root")):
        out = subprocess.run([str(sluice), f"--mode={mode}", "--help"], capture_output=True, text=True)
        assert out.returncode == 0 and expect in out.stdout, out.stderr
