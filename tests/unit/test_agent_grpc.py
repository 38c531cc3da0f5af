"""The agent's gRPC service and client: the whole Backend contract through the wire,
so conversions and typed-error round trips are checked method by method."""

from __future__ import annotations

import time

import pytest

from nvme_target.agent.client import AgentClient
from nvme_target.agent.serve import start
from nvme_target.settings import AgentSettings
from sluice_common.errors import InUse, Unavailable
from tests.contract.auth_contract import AuthContract
from tests.contract.backend_contract import BackendContract, GroupSnapshotContract
from tests.fakes.memory_backend import MemoryBackend


class _Restorable(MemoryBackend):
    def restore(self) -> None:  # what the agent calls before serving
        self.restored = True


@pytest.fixture
def served(tmp_path):
    backend = _Restorable()
    settings = AgentSettings(socket=tmp_path / "agent.sock", target_id="t1",
                             topology={"csi.sluice.dev/zone": "z1"}).validate()
    server = start(settings, backend)
    client = AgentClient(f"unix:{settings.socket}", timeout=10)
    yield backend, client
    client.close()
    server.stop(grace=None)


class TestAgentOverGrpc(BackendContract, GroupSnapshotContract, AuthContract):
    @pytest.fixture
    def backend(self, served):
        return served[1]


def test_info_and_restore_before_serving(served):
    backend, client = served
    assert backend.restored
    info = client.info()
    assert info.target_id == "t1" and info.backend == "kernel"
    assert info.topology == {"csi.sluice.dev/zone": "z1"}
    assert info.portals == backend.portals()


def test_typed_error_keeps_its_class_and_message(served):
    _, client = served
    vol = client.create_volume("pvc-x", 8 << 20)
    client.export_volume(vol.id, [])
    with pytest.raises(InUse, match="is exported"):
        client.delete_volume(vol.id)


def test_a_restarted_agent_answers_the_next_call(tmp_path):
    """After an outage long enough for gRPC's default backoff to grow (calls failing on
    the way), the first call after the agent is back succeeds: no UNAVAILABLE while a
    backoff timer runs out (the controller's unpublish after a target restart)."""
    settings = AgentSettings(socket=tmp_path / "agent.sock", target_id="t1",
                             topology={"csi.sluice.dev/zone": "z1"}).validate()
    server = start(settings, _Restorable())
    client = AgentClient(f"unix:{settings.socket}", timeout=10)
    try:
        assert client.health().ready
        server.stop(grace=None)
        down_until = time.monotonic() + 4  # the default backoff would wait ~5 s for its next try
        while time.monotonic() < down_until:
            with pytest.raises(Unavailable):
                client.list_exports()
        server = start(settings, _Restorable())
        assert client.list_exports() == []
    finally:
        client.close()
        server.stop(grace=None)


def test_an_error_the_agent_raises_is_not_sent_twice(served):
    backend, client = served
    calls = []
    real = backend.get_volume

    def unavailable(volume_id):
        calls.append(volume_id)
        raise Unavailable("the device is gone")

    backend.get_volume = unavailable
    with pytest.raises(Unavailable, match="device is gone"):
        client.get_volume("v1")
    backend.get_volume = real
    assert calls == ["v1"]
