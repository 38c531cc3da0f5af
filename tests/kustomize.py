"""A small kustomize renderer for the features deploy/ uses, so the tests can render every
overlay offline (kustomize itself is not installed on the machines the tests run on).

Supported, as kustomize (v5) does them: `resources` (files and directories), `components`
(kind Component), `namespace`, `images` (name, newName, newTag), `configMapGenerator`
(files, literals; the content-hash name suffix, computed as kustomize computes it, and the
references to it rewritten in pod specs), and `patches` given as JSON 6902 operations (add,
replace, remove) from a file or inline, with a kind/name target. Anything else in a
kustomization is refused, so a feature this renderer does not know cannot be silently
ignored: a new feature in deploy/ must be added here first.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import yaml

KNOWN = {"apiVersion", "kind", "resources", "components", "namespace", "images", "configMapGenerator", "patches"}
CLUSTER_SCOPED = {"Namespace", "CSIDriver", "ClusterRole", "ClusterRoleBinding", "StorageClass",
                  "VolumeAttributesClass", "VolumeSnapshotClass", "PersistentVolume", "CustomResourceDefinition"}
POD_TEMPLATE_KINDS = {"Deployment", "DaemonSet", "StatefulSet", "Job"}


class Unsupported(Exception):
    pass


def render(directory: Path) -> list[dict]:
    """The objects `kubectl kustomize directory` would print (in no particular order)."""
    return _build(Path(directory), expect="Kustomization")


def _build(directory: Path, expect: str) -> list[dict]:
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    if spec.get("kind", "Kustomization") != expect:
        raise Unsupported(f"{directory}: expected kind {expect}, found {spec.get('kind')}")
    unknown = set(spec) - KNOWN
    if unknown:
        raise Unsupported(f"{directory}: kustomization fields {sorted(unknown)} are not rendered")
    objects = _resources(directory, spec.get("resources", []))
    for component in spec.get("components", []):
        objects = _apply_component(directory / component, objects)
    generated = [_config_map(directory, g) for g in spec.get("configMapGenerator", [])]
    objects += generated
    for patch in spec.get("patches", []):
        _patch(directory, objects, patch)
    for image in spec.get("images", []):
        _set_image(objects, image)
    if "namespace" in spec:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = spec["namespace"]
    _hash_names(objects, generated)
    return objects


def _resources(directory: Path, entries: list[str]) -> list[dict]:
    objects = []
    for entry in entries:
        path = directory / entry
        if path.is_dir():
            objects += _build(path, expect="Kustomization")
        else:
            objects += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return objects


def _apply_component(directory: Path, objects: list[dict]) -> list[dict]:
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    if spec.get("kind") != "Component" or set(spec) - KNOWN or {"namespace", "configMapGenerator"} & set(spec):
        raise Unsupported(f"{directory}: only a Component with resources, patches and images is rendered")
    objects = objects + _resources(directory, spec.get("resources", []))
    for patch in spec.get("patches", []):
        _patch(directory, objects, patch)
    for image in spec.get("images", []):
        _set_image(objects, image)
    return objects


def _config_map(directory: Path, generator: dict) -> dict:
    if set(generator) - {"name", "files", "literals"}:
        raise Unsupported(f"{directory}: configMapGenerator fields {sorted(generator)}")
    data = {}
    for name in generator.get("files", []):
        data[Path(name).name] = (directory / name).read_text()
    for literal in generator.get("literals", []):
        key, _, value = literal.partition("=")
        data[key] = value
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": generator["name"]}, "data": data,
            "_generated": True}


def config_map_hash(name: str, data: dict) -> str:
    """kustomize's name suffix: sha256 of the sorted compact JSON of kind, name and data,
    its first ten hex digits with 0, 1, 3, a, e replaced so no word can be spelt."""
    encoded = json.dumps({"data": data, "kind": "ConfigMap", "name": name}, sort_keys=True,
                         separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256(encoded.encode()).hexdigest()[:10]
    return digest.translate(str.maketrans("013ae", "ghkmt"))


def _hash_names(objects: list[dict], generated: list[dict]) -> None:
    renames = {}
    for cm in generated:
        del cm["_generated"]
        old = cm["metadata"]["name"]
        cm["metadata"]["name"] = renames[old] = f"{old}-{config_map_hash(old, cm['data'])}"
    for obj in objects:
        for pod in _pod_specs(obj):
            for ref in _config_map_refs(pod):
                ref["name"] = renames.get(ref["name"], ref["name"])


def _pod_specs(obj: dict) -> list[dict]:
    if obj["kind"] in POD_TEMPLATE_KINDS:
        return [obj["spec"]["template"]["spec"]]
    return [obj["spec"]] if obj["kind"] == "Pod" else []


def _config_map_refs(pod: dict) -> list[dict]:
    refs = [v["configMap"] for v in pod.get("volumes", []) if "configMap" in v]
    for container in pod.get("containers", []) + pod.get("initContainers", []):
        refs += [e["valueFrom"]["configMapKeyRef"] for e in container.get("env", [])
                 if "configMapKeyRef" in e.get("valueFrom", {})]
        refs += [e["configMapRef"] for e in container.get("envFrom", []) if "configMapRef" in e]
    return refs


def _set_image(objects: list[dict], image: dict) -> None:
    for obj in objects:
        for pod in _pod_specs(obj):
            for container in pod.get("containers", []) + pod.get("initContainers", []):
                name, _, tag = container["image"].partition(":")
                if name == image["name"]:
                    container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"


def _patch(directory: Path, objects: list[dict], patch: dict) -> None:
    if set(patch) - {"path", "patch", "target"} or "target" not in patch:
        raise Unsupported(f"{directory}: a patch needs a target (kind, name) and a path or patch")
    ops = yaml.safe_load((directory / patch["path"]).read_text() if "path" in patch else patch["patch"])
    if not isinstance(ops, list):
        raise Unsupported(f"{directory}: only JSON 6902 patches (a list of operations) are rendered")
    target = patch["target"]
    matched = [o for o in objects if all(o["kind"] == v if k == "kind" else o["metadata"].get(k) == v
                                         for k, v in target.items())]
    if not matched:
        raise Unsupported(f"{directory}: patch target {target} matches nothing")
    for obj in matched:
        for op in ops:
            apply_operation(obj, op)


def apply_operation(doc: dict, op: dict) -> None:
    """One JSON 6902 operation (add, replace, remove), in place; a bad path raises KeyError/IndexError."""
    keys = [k.replace("~1", "/").replace("~0", "~") for k in op["path"].split("/")[1:]]
    parent = doc
    for key in keys[:-1]:
        parent = parent[int(key)] if isinstance(parent, list) else parent[key]
    last, kind = keys[-1], op["op"]
    value = copy.deepcopy(op.get("value"))
    if isinstance(parent, list):
        index = len(parent) if last == "-" else int(last)
        if kind == "add":
            parent.insert(index, value)
        elif kind == "replace":
            parent[index] = value
        elif kind == "remove":
            del parent[index]
        else:
            raise Unsupported(f"JSON 6902 op {kind}")
        return
    if kind in ("replace", "remove") and last not in parent:
        raise KeyError(f"{op['path']}: nothing to {kind}")
    if kind == "remove":
        del parent[last]
    elif kind in ("add", "replace"):
        parent[last] = value
    else:
        raise Unsupported(f"JSON 6902 op {kind}")
