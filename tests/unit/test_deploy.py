"""deploy/ as a platform team applies it: every overlay and component rendered (with the
small renderer in tests/kustomize.py) and every object valid against the Kubernetes
schemas (offline, kubernetes-validate, strict), every flag given to a Sluice container
one that Sluice accepts, every ConfigMap, Secret, volume and $(VAR) a pod uses present or a
documented prerequisite, nodes and targets sharing a topology key as shipped, the
examples complete, and the Dockerfile lint-clean."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import json
import os
import re

import kubernetes_validate
import pytest
import yaml

from csi_driver import settings as driver_settings
from csi_driver.launch import split_mode
from csi_driver.targets import Target, load_config
from nvme_target import settings as agent_settings
from tests.kustomize import Unsupported, apply_operation, render

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S_VERSION = "1.34.0"
SLUICE_IMAGE = "ghcr.io/sluice-dev/sluice"
# the snapshot CRD is not a built-in schema: its spec, from external-snapshotter's
# snapshot.storage.k8s.io/v1 VolumeSnapshotClass CRD
SNAPSHOT_CLASS_FIELDS = {"apiVersion", "kind", "metadata", "driver", "deletionPolicy", "parameters"}
# prometheus-operator's monitoring.coreos.com/v1 CRDs (deploy/monitoring) are not built-in
# schemas either: the fields Sluice uses, from the operator's API reference
MONITORING_SPECS = {"PodMonitor": {"selector", "podMetricsEndpoints"}, "PrometheusRule": {"groups"}}
POD_METRICS_ENDPOINT_FIELDS = {"port", "path", "interval", "scheme", "scrapeTimeout"}
RULE_FIELDS = {"alert", "record", "expr", "for", "labels", "annotations"}


OVERLAYS = sorted(p.parent for p in (DEPLOY / "overlays").glob("*/kustomization.yaml"))
COMPONENTS = sorted(p.parent for p in (DEPLOY / "components").glob("*/kustomization.yaml"))
# made by the operator before the first apply (README, "Install"), never by deploy/
PREREQUISITE_SECRETS = {"sluice-agent-server", "sluice-controller-client", "sluice-node-client"}
# cert-manager.io/v1 (deploy/cert-manager) is not a built-in schema: the fields Sluice uses,
# from cert-manager's API reference
CERT_MANAGER_SPECS = {
    "Issuer": {"selfSigned", "ca"},
    "Certificate": {"secretName", "commonName", "subject", "isCA", "ipAddresses", "dnsNames", "uris", "usages",
                    "duration", "renewBefore", "privateKey", "issuerRef"},
}
# nor is the group snapshot one: groupsnapshot.storage.k8s.io/v1 VolumeGroupSnapshotClass,
# served (next to v1beta2) by the CRDs of external-snapshotter v8.6.0, the pinned sidecar
GROUP_SNAPSHOT_CLASS_API = "groupsnapshot.storage.k8s.io/v1"


def documents() -> list[tuple[str, dict]]:
    """The plain manifests: base, examples and monitoring (overlays and components hold patches)."""
    docs = []
    for path in sorted([*(DEPLOY / "base").glob("*.yaml"), *(DEPLOY / "examples").glob("*.yaml"),
                        *(DEPLOY / "monitoring").glob("*.yaml"), *(DEPLOY / "cert-manager").glob("*.yaml")]):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((str(path.relative_to(ROOT)), doc))
    return docs


def with_component(component: Path, tmp: Path) -> Path:
    """A kustomization of base + one component + the cluster values it reads."""
    (tmp / "targets.json").write_text((DEPLOY / "overlays" / "example" / "targets.json").read_text())
    (tmp / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "namespace": "sluice-system",
        "resources": [str(DEPLOY / "base")], "components": [str(component)],
        "configMapGenerator": [{"name": "sluice-targets", "files": ["targets.json"]},
                               {"name": "sluice-cluster", "literals": ["storageInterface=eth1",
                                                                       "devices=/dev/sdb", "zone=eu-1a"]}]}))
    return tmp


def rendered(tmp_root: Path) -> list[tuple[str, list[dict]]]:
    out = [(str(o.relative_to(ROOT)), render(o)) for o in OVERLAYS]
    for component in COMPONENTS:
        tmp = tmp_root / component.name
        tmp.mkdir(parents=True, exist_ok=True)
        out.append((f"base+{component.relative_to(ROOT)}", render(with_component(component, tmp))))
    return out


@pytest.fixture(scope="module")
def renders(tmp_path_factory) -> list[tuple[str, list[dict]]]:
    return rendered(tmp_path_factory.mktemp("kustomize"))


DOCS = [d for d in documents() if d[1].get("kind") != "Kustomization"]


@pytest.mark.parametrize("where, doc", DOCS, ids=[f"{w}:{d['kind']}/{d['metadata']['name']}" for w, d in DOCS])
def test_every_manifest_is_valid_kubernetes(where, doc):
    if doc["kind"] == "VolumeSnapshotClass":
        assert doc["apiVersion"] == "snapshot.storage.k8s.io/v1"
        assert set(doc) <= SNAPSHOT_CLASS_FIELDS and doc["driver"] == "csi.sluice.dev"
        assert doc["deletionPolicy"] in ("Delete", "Retain")
        return
    if doc["kind"] == "VolumeSnapshot":
        assert doc["apiVersion"] == "snapshot.storage.k8s.io/v1"
        assert set(doc["spec"]) == {"volumeSnapshotClassName", "source"}
        assert set(doc["spec"]["source"]) == {"persistentVolumeClaimName"}
        return
    if doc["kind"] == "VolumeGroupSnapshotClass":
        assert doc["apiVersion"] == GROUP_SNAPSHOT_CLASS_API
        assert set(doc) <= SNAPSHOT_CLASS_FIELDS and doc["driver"] == "csi.sluice.dev"
        assert doc["deletionPolicy"] in ("Delete", "Retain")
        return
    if doc["kind"] in MONITORING_SPECS:
        check_monitoring(doc)
        return
    if doc["kind"] in CERT_MANAGER_SPECS:
        assert doc["apiVersion"] == "cert-manager.io/v1" and set(doc) == {"apiVersion", "kind", "metadata", "spec"}
        assert set(doc["spec"]) <= CERT_MANAGER_SPECS[doc["kind"]], doc["spec"]
        return
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def check_monitoring(doc: dict) -> None:
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(doc["metadata"]) <= {"name", "labels", "namespace"}
    assert set(doc["spec"]) <= MONITORING_SPECS[doc["kind"]]
    if doc["kind"] == "PodMonitor":
        assert doc["spec"]["selector"]["matchLabels"]
        for endpoint in doc["spec"]["podMetricsEndpoints"]:
            assert set(endpoint) <= POD_METRICS_ENDPOINT_FIELDS
        return
    for group in doc["spec"]["groups"]:
        assert set(group) <= {"name", "interval", "rules"} and group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= RULE_FIELDS and "expr" in rule, rule


def test_every_pod_monitor_scrapes_a_named_port_of_a_sluice_pod():
    ports = {}
    for _, doc in DOCS:
        template = doc.get("spec", {}).get("template", {})
        for container in template.get("spec", {}).get("containers", []):
            for port in container.get("ports", []):
                app = template["metadata"].get("labels", {}).get("app.kubernetes.io/name", "")
                ports.setdefault(app, set()).add(port.get("name", ""))
    monitors = [d for _, d in DOCS if d["kind"] == "PodMonitor"]
    assert {m["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] for m in monitors} == {
        "sluice-node", "sluice-controller", "sluice-target"}
    for monitor in monitors:
        app = monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
        for endpoint in monitor["spec"]["podMetricsEndpoints"]:
            assert endpoint["port"] in ports[app], f"{app} has no port named {endpoint['port']}"


def test_the_kustomization_lists_every_base_manifest():
    for folder in ("base", "monitoring", "cert-manager"):
        kustomization = yaml.safe_load((DEPLOY / folder / "kustomization.yaml").read_text())
        files = sorted(p.name for p in (DEPLOY / folder).glob("*.yaml") if p.name != "kustomization.yaml")
        assert kustomization["resources"] == files


def sluice_containers(docs=None) -> list[tuple[str, dict]]:
    found = []
    for where, doc in docs or DOCS:
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
    assert {"--extra-create-metadata", "--enable-capacity", "--leader-election"} <= set(provisioner["args"])


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


# ------------------------------------------------------------------ rendered overlays

def test_there_is_an_overlay_and_every_component_is_rendered(renders):
    assert OVERLAYS and COMPONENTS
    assert len(renders) == len(OVERLAYS) + len(COMPONENTS)


def test_every_rendered_object_is_valid_kubernetes(renders):
    for where, objects in renders:
        for obj in objects:
            try:
                kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{where}: {obj['kind']}/{obj['metadata']['name']}: {exc}")


def test_every_flag_in_a_rendered_overlay_is_accepted(renders):
    for where, objects in renders:
        for name, container in sluice_containers([(where, o) for o in objects]):
            test_every_flag_passed_to_sluice_is_one_it_accepts(name, container)


def pods(objects):
    for obj in objects:
        if obj["kind"] in ("Deployment", "DaemonSet", "Job", "StatefulSet"):
            yield obj, obj["spec"]["template"]["spec"]


def test_everything_a_pod_uses_is_rendered_or_a_documented_prerequisite(renders):
    readme = (ROOT / "README.md").read_text()
    for where, objects in renders:
        present = {(o["kind"], o["metadata"]["name"]) for o in objects}
        for obj, pod in pods(objects):
            at = f"{where}: {obj['kind']}/{obj['metadata']['name']}"
            assert ("ServiceAccount", pod["serviceAccountName"]) in present, at
            volumes = {v["name"]: v for v in pod["volumes"]}
            for v in volumes.values():
                if "configMap" in v:
                    assert ("ConfigMap", v["configMap"]["name"]) in present, f"{at}: {v}"
                if "secret" in v:
                    assert v["secret"]["secretName"] in PREREQUISITE_SECRETS, f"{at}: {v}"
            for c in pod["containers"]:
                assert {m["name"] for m in c.get("volumeMounts", [])} <= set(volumes), f"{at}/{c['name']}"
                env = {e["name"]: e for e in c.get("env", [])}
                for e in env.values():
                    ref = e.get("valueFrom", {}).get("configMapKeyRef")
                    if ref:
                        cm = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == ref["name"])
                        assert ref["key"] in cm["data"], f"{at}/{c['name']}: {ref}"
                for arg in c.get("args", []):
                    for var in re.findall(r"\$\((\w+)\)", arg):
                        assert var in env, f"{at}/{c['name']}: {arg} uses $({var}), not in its env"
    for secret in PREREQUISITE_SECRETS:
        assert secret in readme, f"the README's install steps must say how {secret} is made"


def test_the_kubelet_dir_is_one_directory_everywhere_the_node_uses_it(renders):
    for where, objects in renders:
        node = next(o for o in objects if o["kind"] == "DaemonSet" and o["metadata"]["name"] == "sluice-node")
        pod = node["spec"]["template"]["spec"]
        paths = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
        registrar = next(c for c in pod["containers"] if c["name"] == "node-driver-registrar")
        registration = next(a for a in registrar["args"] if a.startswith("--kubelet-registration-path="))
        assert registration.split("=", 1)[1] == paths["socket-dir"] + "/csi.sock", where
        assert paths["socket-dir"] == paths["kubelet-dir"] + "/plugins/csi.sluice.dev", where
        assert paths["registration-dir"] == paths["kubelet-dir"] + "/plugins_registry", where


def container_settings(container: dict, config_maps: dict[str, dict], parse):
    """Parse a Sluice container's args with its env (values and ConfigMap keys) set, as it starts."""
    env = {}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        elif "configMapKeyRef" in e.get("valueFrom", {}):
            ref = e["valueFrom"]["configMapKeyRef"]
            env[e["name"]] = config_maps[ref["name"]]["data"][ref["key"]]
        else:
            env[e["name"]] = "10.0.0.5"      # the downward API (status.hostIP, spec.nodeName)
    args = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in container["args"]]
    saved = dict(os.environ)
    try:
        os.environ.update(env)
        return parse(args)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_nodes_and_targets_share_a_topology_key_as_shipped(renders, tmp_path):
    """external-provisioner needs a topology key on every node and the PV's affinity must
    match the nodes: the shipped node plugin, agent and targets file agree with no edits."""
    for where, objects in renders:
        maps = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ConfigMap"}
        daemons = {o["metadata"]["name"]: o["spec"]["template"]["spec"] for o in objects if o["kind"] == "DaemonSet"}
        node = container_settings(daemons["sluice-node"]["containers"][0], maps, driver_settings.from_args)
        agent = container_settings(daemons["sluice-target"]["containers"][0], maps,
                                   lambda args: agent_settings.from_args(split_mode(args)[1]))
        targets_map = next(m for n, m in maps.items() if n.startswith("sluice-targets-"))
        (tmp_path / "targets.json").write_text(targets_map["data"]["targets.json"])
        targets = load_config(tmp_path / "targets.json")
        assert node.node.topology, f"{where}: the node reports no topology key"
        assert "csi.sluice.dev/fabric" in node.node.topology, where
        for config in targets:
            assert Target(config, backend=None).serves(node.node.topology), f"{where}: {config.id} {config.topology}"
            assert set(config.topology) <= set(node.node.topology), where
        assert dict(targets[0].topology).items() <= dict(agent.topology).items(), where


def test_targets_json_is_generated_so_a_change_rolls_out():
    objects = render(DEPLOY / "overlays" / "example")
    maps = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("sluice-targets-")]
    assert len(maps) == 1
    json.loads(maps[0]["data"]["targets.json"])
    for _, pod in pods(objects):
        for c in pod["containers"]:
            assert not any(m.get("subPath") for m in c.get("volumeMounts", [])), "subPath mounts never update"


def test_the_renderer_hashes_as_kustomize_and_refuses_what_it_does_not_know(tmp_path):
    from tests.kustomize import config_map_hash
    # kustomize's own unit test value for ConfigMap {name: "", data: {}} (api/hasher)
    assert config_map_hash("", {}) == "42745tchd9"
    (tmp_path / "kustomization.yaml").write_text("resources: []\nnamePrefix: x-\n")
    with pytest.raises(Unsupported, match="namePrefix"):
        render(tmp_path)
    doc = {"a": [1, 2]}
    apply_operation(doc, {"op": "add", "path": "/a/-", "value": 3})
    apply_operation(doc, {"op": "replace", "path": "/a/0", "value": 0})
    assert doc == {"a": [0, 2, 3]}
    with pytest.raises(KeyError):
        apply_operation(doc, {"op": "replace", "path": "/b", "value": 1})


def test_the_sidecars_are_the_pinned_versions_with_current_flags(renders):
    pinned = {"csi-provisioner": "v6.3.0", "csi-attacher": "v4.12.0", "csi-snapshotter": "v8.6.0",
              "csi-resizer": "v2.2.1", "csi-node-driver-registrar": "v2.17.0", "livenessprobe": "v2.19.0"}
    for where, objects in renders:
        seen = set()
        for _, pod in pods(objects):
            for c in pod["containers"]:
                image, _, tag = c["image"].rpartition(":")
                name = image.rsplit("/", 1)[-1]
                if name in pinned:
                    seen.add(name)
                    assert tag == pinned[name], f"{where}: {c['image']}"
                    args = " ".join(c["args"])
                    for gone in ("--feature-gates=Topology", "VolumeAttributesClass=true",
                                 "--leader-election-namespace", "--health-port"):
                        assert gone not in args, f"{where}: {name} {gone}"
                if c.get("livenessProbe"):
                    assert c["livenessProbe"]["timeoutSeconds"] >= 2, f"{where}: {c['name']}"
            registrar = [c for c in pod["containers"] if c["name"] == "node-driver-registrar"]
            for c in registrar:
                assert any(a.startswith("--http-endpoint=") for a in c["args"]) and c["livenessProbe"]
        assert seen == set(pinned), where


def test_the_agent_runs_lvm_against_the_hosts_lvm_state(renders):
    for where, objects in renders:
        agent = next(o for o in objects if o["kind"] == "DaemonSet" and o["metadata"]["name"] == "sluice-target")
        pod = agent["spec"]["template"]["spec"]
        host = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
        mounts = {m["mountPath"]: host.get(m["name"]) for m in pod["containers"][0]["volumeMounts"]}
        for path in ("/run/lock/lvm", "/etc/lvm", "/run/lvm", "/dev", "/run/udev"):
            assert mounts.get(path) == path, f"{where}: {path} is not the host's"


def test_base_holds_no_host_specific_value():
    text = "\n".join(p.read_text() for p in (DEPLOY / "base").glob("*.yaml"))
    for pattern in (r"/dev/(nvme\d|sd[a-z]|vd[a-z])", r"\beth\d", r"\bens\d", r"example\.internal", r"\b10\.0\.0\."):
        assert not re.search(pattern, text), pattern


# ------------------------------------------------------------------ examples

# the snapshot CRDs come from external-snapshotter (README, "Install", step 4)
SNAPSHOT_KINDS = {"VolumeSnapshot": {"apiVersion", "kind", "metadata", "spec"},
                  "VolumeSnapshotClass": SNAPSHOT_CLASS_FIELDS}


def example_objects() -> list[dict]:
    return [d for w, d in DOCS if w.startswith("deploy/examples/")]


def test_every_object_an_example_references_exists():
    objects = example_objects()
    have = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects}
    namespaces = {o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"}
    need = set()
    for o in objects:
        ns = o["metadata"].get("namespace")
        if ns:
            need.add(("Namespace", None, ns))
        spec = o.get("spec", {})
        if o["kind"] == "PersistentVolumeClaim":
            need.add(("StorageClass", None, spec["storageClassName"]))
            if "volumeAttributesClassName" in spec:
                need.add(("VolumeAttributesClass", None, spec["volumeAttributesClassName"]))
            if "dataSource" in spec:
                need.add((spec["dataSource"]["kind"], ns, spec["dataSource"]["name"]))
        if o["kind"] == "VolumeSnapshot":
            need.add(("VolumeSnapshotClass", None, spec["volumeSnapshotClassName"]))
            need.add(("PersistentVolumeClaim", ns, spec["source"]["persistentVolumeClaimName"]))
        for _, pod in pods([o]):
            for v in pod.get("volumes", []):
                if "persistentVolumeClaim" in v:
                    need.add(("PersistentVolumeClaim", ns, v["persistentVolumeClaim"]["claimName"]))
    assert namespaces, "the examples create their namespace"
    assert need - have == set()


def test_the_snapshot_prerequisites_are_pinned_to_the_snapshotters_version():
    controller = (DEPLOY / "base" / "11-controller.yaml").read_text()
    version = re.search(r"csi-snapshotter:(v[\d.]+)", controller).group(1)
    readme = (ROOT / "README.md").read_text()
    assert f"external-snapshotter/client/config/crd?ref={version}" in readme
    assert f"external-snapshotter/deploy/kubernetes/snapshot-controller?ref={version}" in readme
    for o in example_objects():
        if o["kind"] in SNAPSHOT_KINDS:
            assert o["apiVersion"] == "snapshot.storage.k8s.io/v1" and set(o) <= SNAPSHOT_KINDS[o["kind"]]


def test_the_agent_serves_on_one_portal_and_one_listen_address(renders):
    """The storage-interface component patches args by index: it must hit the portal and
    listen flags, leaving neither the node's address behind nor a second copy."""
    for where, objects in renders:
        agent = next(o for o in objects if o["kind"] == "DaemonSet" and o["metadata"]["name"] == "sluice-target")
        container = agent["spec"]["template"]["spec"]["containers"][0]
        portal = [a for a in container["args"] if a.startswith("--portal=")]
        listen = [a for a in container["args"] if a.startswith("--listen=")]
        assert len(portal) == len(listen) == 1, where
        on_iface = any(e["name"] == "STORAGE_IFACE" for e in container.get("env", []))
        var = "STORAGE_IFACE" if on_iface else "HOST_IP"
        assert portal == [f"--portal=$({var}):4420"] and listen == [f"--listen=$({var}):7443"], where


def test_cert_manager_issues_the_secrets_sluice_certs_writes_with_the_same_roles():
    from sluice_common import certs

    issued = {d["spec"]["secretName"]: d["spec"] for _, d in DOCS
              if d["kind"] == "Certificate" and not d["spec"].get("isCA")}
    shipped = {r.secret: r for r in certs.roles()}
    assert set(issued) == set(shipped) == PREREQUISITE_SECRETS
    for name, spec in issued.items():
        assert spec["subject"] == {"organizations": ["sluice"], "organizationalUnits": [shipped[name].role]}
        assert spec["usages"][0] == ("server auth" if shipped[name].server else "client auth")
        assert spec["issuerRef"]["name"] == "sluice-ca"
