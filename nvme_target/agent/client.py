"""A remote storage node, through its target agent, behind the same Backend interface
as an in-process backend. gRPC errors come back as the typed errors the agent raised.

A restarted agent is found again within seconds: the channel's reconnect backoff is
capped at RECONNECT_BACKOFF_MS (gRPC's default grows to 120 s, so after a long outage
the agent was back but every call still failed UNAVAILABLE), and a call that failed to
reach the agent waits up to RECONNECT_WAIT s for the channel and is sent once more
(every agent call is idempotent: ensure semantics and look-up-before-create)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence

import grpc

from nvme_target.agent import convert as c
from nvme_target.backend import Backend
from nvme_target.dhchap import HostCredentials
from nvme_target.model import (
    Capacity, Export, GroupSnapshot, Health, IoReport, Portal, QoS, Snapshot, Source, TargetInfo, Volume,
)
from sluice_common.grpc_status import from_rpc_error, raised_by_server
from sluice_common.tlsfiles import TlsFiles

__all__ = ["AgentClient", "TlsFiles"]
from sluice_proto import target_pb2 as pb
from sluice_proto import target_pb2_grpc

DEFAULT_TIMEOUT = 300.0  # a create under load can take a while; the CO retries past this
RECONNECT_BACKOFF_MS = 2000
RECONNECT_WAIT = 3.0
CHANNEL_OPTIONS = (("grpc.initial_reconnect_backoff_ms", 500),
                   ("grpc.max_reconnect_backoff_ms", RECONNECT_BACKOFF_MS))


class AgentClient(Backend):
    def __init__(self, endpoint: str, tls: TlsFiles | None = None,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        """`endpoint`: "unix:/path/to.sock" or "host:port"."""
        self.endpoint = endpoint
        self.timeout = timeout
        self.tls = tls
        self._lock = threading.Lock()
        self._stamp: tuple = ()
        self._previous: grpc.Channel | None = None  # kept open for streams still on it
        self._channel = self._open()
        self._stub = target_pb2_grpc.TargetAgentStub(self._channel)

    def _open(self) -> grpc.Channel:
        if self.tls is None:
            return grpc.insecure_channel(self.endpoint, options=CHANNEL_OPTIONS)
        self._stamp = self.tls.stamp()
        return grpc.secure_channel(self.endpoint, self.tls.credentials(), options=CHANNEL_OPTIONS)

    def stub(self) -> target_pb2_grpc.TargetAgentStub:
        """The stub, on a new channel when the TLS files changed (a rotated Secret)."""
        with self._lock:
            if self.tls is not None and self.tls.stamp() != self._stamp:
                if self._previous is not None:
                    self._previous.close()
                self._previous, self._channel = self._channel, self._open()
                self._stub = target_pb2_grpc.TargetAgentStub(self._channel)
            return self._stub

    def close(self) -> None:
        self._channel.close()
        if self._previous is not None:
            self._previous.close()

    def _call(self, method: str, request, timeout: float | None = None):
        timeout = timeout or self.timeout
        try:
            return getattr(self.stub(), method)(request, timeout=timeout)
        except grpc.RpcError as err:
            if not self._reconnected(err, timeout):
                raise from_rpc_error(err) from None
        try:
            return getattr(self.stub(), method)(request, timeout=timeout)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    def _reconnected(self, err: grpc.RpcError, timeout: float) -> bool:
        """Whether a call that never reached the agent (UNAVAILABLE from the channel, not
        an error the agent raised) is worth one more try: the channel is ready again
        within a short wait (the agent restarted)."""
        if err.code() != grpc.StatusCode.UNAVAILABLE or raised_by_server(err):  # type: ignore[attr-defined]
            return False
        try:
            grpc.channel_ready_future(self._channel).result(timeout=min(RECONNECT_WAIT, timeout))
        except grpc.FutureTimeoutError:
            return False
        return True

    def info(self) -> TargetInfo:
        return c.info(self._call("GetInfo", pb.GetInfoRequest(), timeout=10))

    def health(self) -> Health:
        return c.health(self._call("CheckHealth", pb.CheckHealthRequest(), timeout=10))

    def create_volume(self, name: str, size_bytes: int, metadata: Mapping[str, str] | None = None,
                      source: Source | None = None) -> Volume:
        req = pb.CreateVolumeRequest(name=name, size_bytes=size_bytes, metadata=dict(metadata or {}),
                                     source=c.source_pb(source))
        return c.volume(self._call("CreateVolume", req))

    def get_volume(self, volume_id: str) -> Volume:
        return c.volume(self._call("GetVolume", pb.VolumeRef(volume_id=volume_id)))

    def find_volume(self, name: str) -> Volume | None:
        resp = self._call("FindVolume", pb.NameRef(name=name))
        return c.volume(resp.volume) if resp.HasField("volume") else None

    def list_volumes(self, start_after: str = "", limit: int = 0) -> list[Volume]:
        req = pb.ListVolumesRequest(start_after=start_after, limit=limit)
        return [c.volume(v) for v in self._call("ListVolumes", req).volumes]

    def delete_volume(self, volume_id: str, unexport: bool = False) -> None:
        self._call("DeleteVolume", pb.DeleteVolumeRequest(volume_id=volume_id, unexport=unexport))

    def expand_volume(self, volume_id: str, size_bytes: int) -> Volume:
        req = pb.ExpandVolumeRequest(volume_id=volume_id, size_bytes=size_bytes)
        return c.volume(self._call("ExpandVolume", req))

    def set_qos(self, volume_id: str, qos: QoS) -> Volume:
        return c.volume(self._call("SetQoS", pb.SetQoSRequest(volume_id=volume_id, qos=c.qos_pb(qos))))

    def report_io(self, host_nqn: str, reports: Mapping[str, IoReport]) -> None:
        self._call("ReportIO", c.io_reports_pb(host_nqn, reports), timeout=2)

    def find_name(self, name: str) -> tuple[Volume | None, tuple[str, ...]]:
        resp = self._call("FindName", pb.NameRef(name=name))
        return (c.volume(resp.volume) if resp.HasField("volume") else None), tuple(resp.placed_on)

    def point_names(self, pointers: Mapping[str, str]) -> None:
        self._call("PointNames", pb.PointNamesRequest(pointers=dict(pointers)))

    def resync(self) -> None:
        self._call("Resync", pb.Empty())

    def watch_volumes(self, volume_ids: Sequence[str], stop: threading.Event,
                      tick: float = 1.0, decorate: Callable[[Volume], Volume] | None = None) -> Iterator[Volume]:
        """The agent's WatchVolumes stream until `stop` is set (which cancels it at
        once). A typed error ends it when the agent goes away; the caller reconnects."""
        stream = self.stub().WatchVolumes(pb.WatchVolumesRequest(volume_ids=list(volume_ids)))
        ended = threading.Event()

        def cancel_on_stop() -> None:
            while not ended.is_set():
                if stop.wait(0.25):
                    stream.cancel()
                    return

        threading.Thread(target=cancel_on_stop, name="watch-cancel", daemon=True).start()
        try:
            for message in stream:
                yield c.volume(message)
        except grpc.RpcError as err:
            if not (stop.is_set() and err.code() == grpc.StatusCode.CANCELLED):
                raise from_rpc_error(err) from None
        finally:
            ended.set()
            stream.cancel()

    def create_snapshot(self, name: str, source_volume_id: str) -> Snapshot:
        req = pb.CreateSnapshotRequest(name=name, source_volume_id=source_volume_id)
        return c.snapshot(self._call("CreateSnapshot", req))

    def get_snapshot(self, snapshot_id: str) -> Snapshot:
        return c.snapshot(self._call("GetSnapshot", pb.SnapshotRef(snapshot_id=snapshot_id)))

    def find_snapshot(self, name: str) -> Snapshot | None:
        resp = self._call("FindSnapshot", pb.NameRef(name=name))
        return c.snapshot(resp.snapshot) if resp.HasField("snapshot") else None

    def list_snapshots(self, source_volume_id: str | None = None) -> list[Snapshot]:
        resp = self._call("ListSnapshots", pb.ListSnapshotsRequest(source_volume_id=source_volume_id or ""))
        return [c.snapshot(s) for s in resp.snapshots]

    def delete_snapshot(self, snapshot_id: str) -> None:
        self._call("DeleteSnapshot", pb.SnapshotRef(snapshot_id=snapshot_id))

    def create_group_snapshot(self, name: str, source_volume_ids: Sequence[str]) -> GroupSnapshot:
        req = pb.CreateGroupSnapshotRequest(name=name, source_volume_ids=list(source_volume_ids))
        return c.group_snapshot(self._call("CreateGroupSnapshot", req))

    def get_group_snapshot(self, group_id: str) -> GroupSnapshot:
        return c.group_snapshot(self._call("GetGroupSnapshot", pb.GroupSnapshotRef(group_snapshot_id=group_id)))

    def delete_group_snapshot(self, group_id: str) -> None:
        self._call("DeleteGroupSnapshot", pb.GroupSnapshotRef(group_snapshot_id=group_id))

    def capacity(self) -> Capacity:
        return c.capacity(self._call("GetCapacity", pb.GetCapacityRequest()))

    def portals(self) -> tuple[Portal, ...]:
        return self.info().portals

    def export_volume(self, volume_id: str, hosts: Iterable[str] = ()) -> Export:
        req = pb.ExportVolumeRequest(volume_id=volume_id, hosts=list(hosts))
        return c.export(self._call("ExportVolume", req))

    def add_host(self, volume_id: str, host_nqn: str, readonly: bool = False, auth: str = "none") -> Export:
        req = pb.HostRequest(volume_id=volume_id, host_nqn=host_nqn, readonly=readonly, auth=auth)
        return c.export(self._call("AddHost", req))

    def host_credentials(self, volume_id: str, host_nqn: str) -> HostCredentials:
        resp = self._call("GetHostCredentials", pb.HostRequest(volume_id=volume_id, host_nqn=host_nqn), timeout=30)
        return HostCredentials(resp.mode or "none", resp.secret, resp.ctrl_secret)

    def remove_host(self, volume_id: str, host_nqn: str) -> Export | None:
        resp = self._call("RemoveHost", pb.HostRequest(volume_id=volume_id, host_nqn=host_nqn))
        return c.maybe_export(resp)

    def unexport_volume(self, volume_id: str) -> None:
        self._call("UnexportVolume", pb.VolumeRef(volume_id=volume_id))

    def get_export(self, volume_id: str) -> Export | None:
        return c.maybe_export(self._call("GetExport", pb.VolumeRef(volume_id=volume_id)))

    def list_exports(self, volume_ids: Collection[str] | None = None) -> list[Export]:
        req = pb.ListExportsRequest(volume_ids=list(volume_ids or ()), filtered=volume_ids is not None)
        return [c.export(x) for x in self._call("ListExports", req).exports]
