from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Empty(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CheckHealthRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetCapacityRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Portal(_message.Message):
    __slots__ = ("traddr", "trsvcid", "adrfam")
    TRADDR_FIELD_NUMBER: _ClassVar[int]
    TRSVCID_FIELD_NUMBER: _ClassVar[int]
    ADRFAM_FIELD_NUMBER: _ClassVar[int]
    traddr: str
    trsvcid: str
    adrfam: str
    def __init__(self, traddr: _Optional[str] = ..., trsvcid: _Optional[str] = ..., adrfam: _Optional[str] = ...) -> None: ...

class TargetInfo(_message.Message):
    __slots__ = ("target_id", "backend", "topology", "portals", "version")
    class TopologyEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TARGET_ID_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    TOPOLOGY_FIELD_NUMBER: _ClassVar[int]
    PORTALS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    target_id: str
    backend: str
    topology: _containers.ScalarMap[str, str]
    portals: _containers.RepeatedCompositeFieldContainer[Portal]
    version: str
    def __init__(self, target_id: _Optional[str] = ..., backend: _Optional[str] = ..., topology: _Optional[_Mapping[str, str]] = ..., portals: _Optional[_Iterable[_Union[Portal, _Mapping]]] = ..., version: _Optional[str] = ...) -> None: ...

class Health(_message.Message):
    __slots__ = ("ready", "problems")
    READY_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    ready: bool
    problems: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ready: _Optional[bool] = ..., problems: _Optional[_Iterable[str]] = ...) -> None: ...

class Source(_message.Message):
    __slots__ = ("kind", "id")
    KIND_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    kind: str
    id: str
    def __init__(self, kind: _Optional[str] = ..., id: _Optional[str] = ...) -> None: ...

class QoS(_message.Message):
    __slots__ = ("read_iops", "write_iops", "read_bps", "write_bps", "qos_class", "latency_target_us", "min_bps", "min_iops")
    READ_IOPS_FIELD_NUMBER: _ClassVar[int]
    WRITE_IOPS_FIELD_NUMBER: _ClassVar[int]
    READ_BPS_FIELD_NUMBER: _ClassVar[int]
    WRITE_BPS_FIELD_NUMBER: _ClassVar[int]
    QOS_CLASS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_TARGET_US_FIELD_NUMBER: _ClassVar[int]
    MIN_BPS_FIELD_NUMBER: _ClassVar[int]
    MIN_IOPS_FIELD_NUMBER: _ClassVar[int]
    read_iops: int
    write_iops: int
    read_bps: int
    write_bps: int
    qos_class: str
    latency_target_us: int
    min_bps: int
    min_iops: int
    def __init__(self, read_iops: _Optional[int] = ..., write_iops: _Optional[int] = ..., read_bps: _Optional[int] = ..., write_bps: _Optional[int] = ..., qos_class: _Optional[str] = ..., latency_target_us: _Optional[int] = ..., min_bps: _Optional[int] = ..., min_iops: _Optional[int] = ...) -> None: ...

class Volume(_message.Message):
    __slots__ = ("id", "name", "size_bytes", "metadata", "source", "qos", "condition", "ceiling", "ceiling_reason")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    QOS_FIELD_NUMBER: _ClassVar[int]
    CONDITION_FIELD_NUMBER: _ClassVar[int]
    CEILING_FIELD_NUMBER: _ClassVar[int]
    CEILING_REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    size_bytes: int
    metadata: _containers.ScalarMap[str, str]
    source: Source
    qos: QoS
    condition: str
    ceiling: QoS
    ceiling_reason: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., size_bytes: _Optional[int] = ..., metadata: _Optional[_Mapping[str, str]] = ..., source: _Optional[_Union[Source, _Mapping]] = ..., qos: _Optional[_Union[QoS, _Mapping]] = ..., condition: _Optional[str] = ..., ceiling: _Optional[_Union[QoS, _Mapping]] = ..., ceiling_reason: _Optional[str] = ...) -> None: ...

class VolumeIO(_message.Message):
    __slots__ = ("volume_id", "latency_us", "bytes_per_second", "ios_per_second")
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    LATENCY_US_FIELD_NUMBER: _ClassVar[int]
    BYTES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    IOS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    volume_id: str
    latency_us: float
    bytes_per_second: float
    ios_per_second: float
    def __init__(self, volume_id: _Optional[str] = ..., latency_us: _Optional[float] = ..., bytes_per_second: _Optional[float] = ..., ios_per_second: _Optional[float] = ...) -> None: ...

class ReportIORequest(_message.Message):
    __slots__ = ("host_nqn", "volumes")
    HOST_NQN_FIELD_NUMBER: _ClassVar[int]
    VOLUMES_FIELD_NUMBER: _ClassVar[int]
    host_nqn: str
    volumes: _containers.RepeatedCompositeFieldContainer[VolumeIO]
    def __init__(self, host_nqn: _Optional[str] = ..., volumes: _Optional[_Iterable[_Union[VolumeIO, _Mapping]]] = ...) -> None: ...

class SetQoSRequest(_message.Message):
    __slots__ = ("volume_id", "qos")
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    QOS_FIELD_NUMBER: _ClassVar[int]
    volume_id: str
    qos: QoS
    def __init__(self, volume_id: _Optional[str] = ..., qos: _Optional[_Union[QoS, _Mapping]] = ...) -> None: ...

class WatchVolumesRequest(_message.Message):
    __slots__ = ("volume_ids",)
    VOLUME_IDS_FIELD_NUMBER: _ClassVar[int]
    volume_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, volume_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class VolumeRef(_message.Message):
    __slots__ = ("volume_id",)
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    volume_id: str
    def __init__(self, volume_id: _Optional[str] = ...) -> None: ...

class SnapshotRef(_message.Message):
    __slots__ = ("snapshot_id",)
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    snapshot_id: str
    def __init__(self, snapshot_id: _Optional[str] = ...) -> None: ...

class NameRef(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class CreateVolumeRequest(_message.Message):
    __slots__ = ("name", "size_bytes", "metadata", "source")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    size_bytes: int
    metadata: _containers.ScalarMap[str, str]
    source: Source
    def __init__(self, name: _Optional[str] = ..., size_bytes: _Optional[int] = ..., metadata: _Optional[_Mapping[str, str]] = ..., source: _Optional[_Union[Source, _Mapping]] = ...) -> None: ...

class ListVolumesRequest(_message.Message):
    __slots__ = ("start_after", "limit")
    START_AFTER_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    start_after: str
    limit: int
    def __init__(self, start_after: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class FindVolumeResponse(_message.Message):
    __slots__ = ("volume",)
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    volume: Volume
    def __init__(self, volume: _Optional[_Union[Volume, _Mapping]] = ...) -> None: ...

class FindNameResponse(_message.Message):
    __slots__ = ("volume", "placed_on")
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    PLACED_ON_FIELD_NUMBER: _ClassVar[int]
    volume: Volume
    placed_on: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, volume: _Optional[_Union[Volume, _Mapping]] = ..., placed_on: _Optional[_Iterable[str]] = ...) -> None: ...

class PointNamesRequest(_message.Message):
    __slots__ = ("pointers",)
    class PointersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    POINTERS_FIELD_NUMBER: _ClassVar[int]
    pointers: _containers.ScalarMap[str, str]
    def __init__(self, pointers: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ListVolumesResponse(_message.Message):
    __slots__ = ("volumes",)
    VOLUMES_FIELD_NUMBER: _ClassVar[int]
    volumes: _containers.RepeatedCompositeFieldContainer[Volume]
    def __init__(self, volumes: _Optional[_Iterable[_Union[Volume, _Mapping]]] = ...) -> None: ...

class DeleteVolumeRequest(_message.Message):
    __slots__ = ("volume_id", "unexport")
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    UNEXPORT_FIELD_NUMBER: _ClassVar[int]
    volume_id: str
    unexport: bool
    def __init__(self, volume_id: _Optional[str] = ..., unexport: _Optional[bool] = ...) -> None: ...

class ExpandVolumeRequest(_message.Message):
    __slots__ = ("volume_id", "size_bytes")
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    volume_id: str
    size_bytes: int
    def __init__(self, volume_id: _Optional[str] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class Snapshot(_message.Message):
    __slots__ = ("id", "name", "source_volume_id", "size_bytes", "created_at_unix_ns", "ready", "group_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    source_volume_id: str
    size_bytes: int
    created_at_unix_ns: int
    ready: bool
    group_id: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., source_volume_id: _Optional[str] = ..., size_bytes: _Optional[int] = ..., created_at_unix_ns: _Optional[int] = ..., ready: _Optional[bool] = ..., group_id: _Optional[str] = ...) -> None: ...

class CreateSnapshotRequest(_message.Message):
    __slots__ = ("name", "source_volume_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    source_volume_id: str
    def __init__(self, name: _Optional[str] = ..., source_volume_id: _Optional[str] = ...) -> None: ...

class GroupSnapshot(_message.Message):
    __slots__ = ("id", "name", "snapshots", "created_at_unix_ns", "ready")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOTS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    snapshots: _containers.RepeatedCompositeFieldContainer[Snapshot]
    created_at_unix_ns: int
    ready: bool
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., snapshots: _Optional[_Iterable[_Union[Snapshot, _Mapping]]] = ..., created_at_unix_ns: _Optional[int] = ..., ready: _Optional[bool] = ...) -> None: ...

class CreateGroupSnapshotRequest(_message.Message):
    __slots__ = ("name", "source_volume_ids")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_VOLUME_IDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    source_volume_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., source_volume_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class GroupSnapshotRef(_message.Message):
    __slots__ = ("group_snapshot_id",)
    GROUP_SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    group_snapshot_id: str
    def __init__(self, group_snapshot_id: _Optional[str] = ...) -> None: ...

class FindSnapshotResponse(_message.Message):
    __slots__ = ("snapshot",)
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    snapshot: Snapshot
    def __init__(self, snapshot: _Optional[_Union[Snapshot, _Mapping]] = ...) -> None: ...

class ListSnapshotsRequest(_message.Message):
    __slots__ = ("source_volume_id",)
    SOURCE_VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    source_volume_id: str
    def __init__(self, source_volume_id: _Optional[str] = ...) -> None: ...

class ListSnapshotsResponse(_message.Message):
    __slots__ = ("snapshots",)
    SNAPSHOTS_FIELD_NUMBER: _ClassVar[int]
    snapshots: _containers.RepeatedCompositeFieldContainer[Snapshot]
    def __init__(self, snapshots: _Optional[_Iterable[_Union[Snapshot, _Mapping]]] = ...) -> None: ...

class Capacity(_message.Message):
    __slots__ = ("total_bytes", "used_bytes", "provisioned_bytes", "available_bytes", "data_percent", "metadata_percent", "overcommit_ratio", "allocation_unit_bytes")
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    PROVISIONED_BYTES_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_BYTES_FIELD_NUMBER: _ClassVar[int]
    DATA_PERCENT_FIELD_NUMBER: _ClassVar[int]
    METADATA_PERCENT_FIELD_NUMBER: _ClassVar[int]
    OVERCOMMIT_RATIO_FIELD_NUMBER: _ClassVar[int]
    ALLOCATION_UNIT_BYTES_FIELD_NUMBER: _ClassVar[int]
    total_bytes: int
    used_bytes: int
    provisioned_bytes: int
    available_bytes: int
    data_percent: float
    metadata_percent: float
    overcommit_ratio: float
    allocation_unit_bytes: int
    def __init__(self, total_bytes: _Optional[int] = ..., used_bytes: _Optional[int] = ..., provisioned_bytes: _Optional[int] = ..., available_bytes: _Optional[int] = ..., data_percent: _Optional[float] = ..., metadata_percent: _Optional[float] = ..., overcommit_ratio: _Optional[float] = ..., allocation_unit_bytes: _Optional[int] = ...) -> None: ...

class Export(_message.Message):
    __slots__ = ("volume_id", "subsystem_nqn", "namespace_uuid", "namespace_nguid", "serial", "portals", "hosts", "readonly_hosts")
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    SUBSYSTEM_NQN_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_UUID_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_NGUID_FIELD_NUMBER: _ClassVar[int]
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    PORTALS_FIELD_NUMBER: _ClassVar[int]
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    READONLY_HOSTS_FIELD_NUMBER: _ClassVar[int]
    volume_id: str
    subsystem_nqn: str
    namespace_uuid: str
    namespace_nguid: str
    serial: str
    portals: _containers.RepeatedCompositeFieldContainer[Portal]
    hosts: _containers.RepeatedScalarFieldContainer[str]
    readonly_hosts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, volume_id: _Optional[str] = ..., subsystem_nqn: _Optional[str] = ..., namespace_uuid: _Optional[str] = ..., namespace_nguid: _Optional[str] = ..., serial: _Optional[str] = ..., portals: _Optional[_Iterable[_Union[Portal, _Mapping]]] = ..., hosts: _Optional[_Iterable[str]] = ..., readonly_hosts: _Optional[_Iterable[str]] = ...) -> None: ...

class MaybeExport(_message.Message):
    __slots__ = ("export",)
    EXPORT_FIELD_NUMBER: _ClassVar[int]
    export: Export
    def __init__(self, export: _Optional[_Union[Export, _Mapping]] = ...) -> None: ...

class ExportVolumeRequest(_message.Message):
    __slots__ = ("volume_id", "hosts")
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    volume_id: str
    hosts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, volume_id: _Optional[str] = ..., hosts: _Optional[_Iterable[str]] = ...) -> None: ...

class HostRequest(_message.Message):
    __slots__ = ("volume_id", "host_nqn", "readonly", "auth")
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    HOST_NQN_FIELD_NUMBER: _ClassVar[int]
    READONLY_FIELD_NUMBER: _ClassVar[int]
    AUTH_FIELD_NUMBER: _ClassVar[int]
    volume_id: str
    host_nqn: str
    readonly: bool
    auth: str
    def __init__(self, volume_id: _Optional[str] = ..., host_nqn: _Optional[str] = ..., readonly: _Optional[bool] = ..., auth: _Optional[str] = ...) -> None: ...

class HostCredentials(_message.Message):
    __slots__ = ("mode", "secret", "ctrl_secret")
    MODE_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    CTRL_SECRET_FIELD_NUMBER: _ClassVar[int]
    mode: str
    secret: str
    ctrl_secret: str
    def __init__(self, mode: _Optional[str] = ..., secret: _Optional[str] = ..., ctrl_secret: _Optional[str] = ...) -> None: ...

class ListExportsRequest(_message.Message):
    __slots__ = ("volume_ids", "filtered")
    VOLUME_IDS_FIELD_NUMBER: _ClassVar[int]
    FILTERED_FIELD_NUMBER: _ClassVar[int]
    volume_ids: _containers.RepeatedScalarFieldContainer[str]
    filtered: bool
    def __init__(self, volume_ids: _Optional[_Iterable[str]] = ..., filtered: _Optional[bool] = ...) -> None: ...

class ListExportsResponse(_message.Message):
    __slots__ = ("exports",)
    EXPORTS_FIELD_NUMBER: _ClassVar[int]
    exports: _containers.RepeatedCompositeFieldContainer[Export]
    def __init__(self, exports: _Optional[_Iterable[_Union[Export, _Mapping]]] = ...) -> None: ...
