"""The name pointers a target keeps as the home of volume names (nvme_target/pointers.py):
durable across a restart, only ever added to, and written before the call returns."""

from __future__ import annotations

import json

import pytest

from nvme_target.pointers import NamePointers
from sluice_common import statefile


def test_pointers_survive_a_restart_and_are_only_added_to(tmp_path):
    path = tmp_path / "name-pointers.json"
    pointers = NamePointers(path)
    assert pointers.get("pvc-a") == () and not path.exists()
    pointers.add({"pvc-a": "t1", "pvc-b": "t2"})
    pointers.add({"pvc-a": "t3"})
    pointers.add({"pvc-a": "t1"})  # known: nothing written
    again = NamePointers(path)  # the agent restarted
    assert again.get("pvc-a") == ("t1", "t3") and again.get("pvc-b") == ("t2",) and len(again) == 2
    assert json.loads(path.read_text())["pointers"] == {"pvc-a": ["t1", "t3"], "pvc-b": ["t2"]}
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_a_failed_write_changes_nothing(tmp_path, monkeypatch):
    path = tmp_path / "name-pointers.json"
    pointers = NamePointers(path)
    pointers.add({"pvc-a": "t1"})

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(statefile, "write_json", disk_full)
    with pytest.raises(OSError):
        pointers.add({"pvc-b": "t2"})
    assert pointers.get("pvc-b") == () and NamePointers(path).get("pvc-b") == ()
