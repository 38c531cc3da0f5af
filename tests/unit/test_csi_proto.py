"""The CSI v1.12.0 protocol as compiled into sluice_proto.

Wire identity with the official definition is checked field by field for the parts
Sluice's callers depend on, every request of every service is round-tripped, and the
fields marked `csi_secret` in the descriptors are exactly the spec's secret fields.
"""

from __future__ import annotations

import importlib

import pytest
from google.protobuf import descriptor_pb2

from sluice_proto import csi_pb2, csi_pb2_grpc

FD = csi_pb2.DESCRIPTOR

SERVICES = {
    "Identity": ["GetPluginInfo", "GetPluginCapabilities", "Probe"],
    "Controller": [
        "CreateVolume", "DeleteVolume", "ControllerPublishVolume", "ControllerUnpublishVolume",
        "ValidateVolumeCapabilities", "ListVolumes", "GetCapacity", "ControllerGetCapabilities",
        "CreateSnapshot", "DeleteSnapshot", "ListSnapshots", "GetSnapshot",
        "ControllerExpandVolume", "ControllerGetVolume", "ControllerModifyVolume",
    ],
    "GroupController": [
        "GroupControllerGetCapabilities", "CreateVolumeGroupSnapshot",
        "DeleteVolumeGroupSnapshot", "GetVolumeGroupSnapshot",
    ],
    "SnapshotMetadata": ["GetMetadataAllocated", "GetMetadataDelta"],
    "Node": [
        "NodeStageVolume", "NodeUnstageVolume", "NodePublishVolume", "NodeUnpublishVolume",
        "NodeGetVolumeStats", "NodeExpandVolume", "NodeGetCapabilities", "NodeGetInfo",
    ],
}

# Every field the CSI v1.12.0 spec marks `[(csi_secret) = true]`.
SECRET_FIELDS = {
    "CreateVolumeRequest.secrets", "DeleteVolumeRequest.secrets",
    "ControllerPublishVolumeRequest.secrets", "ControllerUnpublishVolumeRequest.secrets",
    "ValidateVolumeCapabilitiesRequest.secrets", "ControllerModifyVolumeRequest.secrets",
    "CreateSnapshotRequest.secrets", "DeleteSnapshotRequest.secrets",
    "ListSnapshotsRequest.secrets", "GetSnapshotRequest.secrets",
    "ControllerExpandVolumeRequest.secrets", "NodeStageVolumeRequest.secrets",
    "NodePublishVolumeRequest.secrets", "NodeExpandVolumeRequest.secrets",
    "CreateVolumeGroupSnapshotRequest.secrets", "DeleteVolumeGroupSnapshotRequest.secrets",
    "GetVolumeGroupSnapshotRequest.secrets", "GetMetadataAllocatedRequest.secrets",
    "GetMetadataDeltaRequest.secrets",
}

# Methods, messages, fields and enum values the spec marks alpha in v1.12.0.
ALPHA = {
    "method": {"Controller.GetSnapshot", "Controller.ControllerGetVolume"},
    "service": {"SnapshotMetadata"},
    "message": {
        "ControllerGetVolumeRequest", "ControllerGetVolumeResponse", "GetSnapshotRequest",
        "GetSnapshotResponse", "VolumeCondition",
    },
    "field": {
        "ListVolumesResponse.VolumeStatus.volume_condition",
        "GetCapacityResponse.minimum_volume_size",
        "NodeGetVolumeStatsResponse.volume_condition", "NodeExpandVolumeRequest.secrets",
    },
    "enum_value": {
        "PluginCapability.Service.Type.SNAPSHOT_METADATA_SERVICE",
        "VolumeCapability.AccessMode.Mode.SINGLE_NODE_SINGLE_WRITER",
        "VolumeCapability.AccessMode.Mode.SINGLE_NODE_MULTI_WRITER",
        "ControllerServiceCapability.RPC.Type.VOLUME_CONDITION",
        "ControllerServiceCapability.RPC.Type.GET_VOLUME",
        "ControllerServiceCapability.RPC.Type.SINGLE_NODE_MULTI_WRITER",
        "ControllerServiceCapability.RPC.Type.GET_SNAPSHOT",
        "NodeServiceCapability.RPC.Type.VOLUME_CONDITION",
        "NodeServiceCapability.RPC.Type.SINGLE_NODE_MULTI_WRITER",
    },
}


def all_messages(descriptors=None, prefix=""):
    for desc in descriptors if descriptors is not None else FD.message_types_by_name.values():
        yield prefix + desc.name, desc
        yield from all_messages(desc.nested_types, prefix + desc.name + ".")


def is_set(options, extension) -> bool:
    return options.HasExtension(extension) and options.Extensions[extension]


def test_package_and_services():
    assert FD.package == "csi.v1"
    assert {name: [m.name for m in svc.methods] for name, svc in FD.services_by_name.items()} == SERVICES


def test_extension_numbers_match_the_spec():
    assert csi_pb2.csi_secret.number == 1059
    for ext in ("alpha_enum", "alpha_enum_value", "alpha_field", "alpha_message",
                "alpha_method", "alpha_service"):
        assert getattr(csi_pb2, ext).number == 1060


def test_secret_fields_are_the_ones_marked_csi_secret():
    marked = {
        f"{name}.{field.name}"
        for name, desc in all_messages()
        for field in desc.fields
        if is_set(field.GetOptions(), csi_pb2.csi_secret)
    }
    assert marked == SECRET_FIELDS
    for name in marked:  # every secret is a map<string,string>
        msg, field = name.rsplit(".", 1)
        fd = dict(all_messages())[msg].fields_by_name[field]
        assert fd.message_type.GetOptions().map_entry


def test_alpha_options_match_the_spec():
    found = {key: set() for key in ALPHA}
    for name, svc in FD.services_by_name.items():
        if is_set(svc.GetOptions(), csi_pb2.alpha_service):
            found["service"].add(name)
        for m in svc.methods:
            if is_set(m.GetOptions(), csi_pb2.alpha_method):
                found["method"].add(f"{name}.{m.name}")
    for name, desc in all_messages():
        if is_set(desc.GetOptions(), csi_pb2.alpha_message):
            found["message"].add(name)
        for f in desc.fields:
            if is_set(f.GetOptions(), csi_pb2.alpha_field):
                found["field"].add(f"{name}.{f.name}")
        for enum in desc.enum_types:
            for v in enum.values:
                if is_set(v.GetOptions(), csi_pb2.alpha_enum_value):
                    found["enum_value"].add(f"{name}.{enum.name}.{v.name}")
    assert found == ALPHA


@pytest.mark.parametrize(
    "message, field, number, type_",
    [
        ("CreateVolumeRequest", "mutable_parameters", 8, "TYPE_MESSAGE"),
        ("CreateVolumeRequest", "accessibility_requirements", 7, "TYPE_MESSAGE"),
        ("ListVolumesRequest", "max_entries", 1, "TYPE_INT32"),
        ("ListSnapshotsRequest", "snapshot_id", 4, "TYPE_STRING"),
        ("NodeGetInfoResponse", "max_volumes_per_node", 2, "TYPE_INT64"),
        ("NodePublishVolumeRequest", "volume_context", 8, "TYPE_MESSAGE"),
        ("NodeStageVolumeRequest", "staging_target_path", 3, "TYPE_STRING"),
        ("Snapshot", "group_snapshot_id", 6, "TYPE_STRING"),
        ("ControllerExpandVolumeResponse", "node_expansion_required", 2, "TYPE_BOOL"),
        ("ValidateVolumeCapabilitiesRequest", "mutable_parameters", 6, "TYPE_MESSAGE"),
        ("GetCapacityResponse", "maximum_volume_size", 2, "TYPE_MESSAGE"),
        ("VolumeCapability", "access_mode", 3, "TYPE_MESSAGE"),
    ],
)
def test_field_numbers_and_types(message, field, number, type_):
    fd = dict(all_messages())[message].fields_by_name[field]
    assert fd.number == number
    assert descriptor_pb2.FieldDescriptorProto.Type.Name(fd.type) == type_


def sample_request(method) -> object:
    """A request with its scalar, map and repeated fields filled, for a round trip."""
    msg = getattr(csi_pb2, method.input_type.name)()
    for f in method.input_type.fields:
        if f.message_type and f.message_type.GetOptions().map_entry:
            getattr(msg, f.name)["k"] = "v"
        elif f.type == f.TYPE_STRING:
            if f.is_repeated:
                getattr(msg, f.name).append("a")
            else:
                setattr(msg, f.name, f"{f.name}-x")
        elif f.type in (f.TYPE_INT32, f.TYPE_INT64):
            setattr(msg, f.name, 7)
        elif f.type == f.TYPE_BOOL:
            setattr(msg, f.name, True)
    return msg


@pytest.mark.parametrize(
    "service, method",
    [(s, m) for s, methods in SERVICES.items() for m in methods],
)
def test_every_request_round_trips(service, method):
    desc = FD.services_by_name[service].methods_by_name[method]
    req = sample_request(desc)
    wire = req.SerializeToString()
    back = type(req).FromString(wire)
    assert back == req
    assert back.ListFields() == req.ListFields()


def test_round_trip_of_a_rich_create_volume_request():
    req = csi_pb2.CreateVolumeRequest(
        name="pvc-1",
        capacity_range=csi_pb2.CapacityRange(required_bytes=1 << 30, limit_bytes=2 << 30),
        volume_capabilities=[csi_pb2.VolumeCapability(
            mount=csi_pb2.VolumeCapability.MountVolume(fs_type="xfs", mount_flags=["noatime"]),
            access_mode=csi_pb2.VolumeCapability.AccessMode(
                mode=csi_pb2.VolumeCapability.AccessMode.MULTI_NODE_READER_ONLY),
        )],
        parameters={"qos.readIOPS": "500"},
        secrets={"token": "s3cret"},
        volume_content_source=csi_pb2.VolumeContentSource(
            snapshot=csi_pb2.VolumeContentSource.SnapshotSource(snapshot_id="snap-1")),
        accessibility_requirements=csi_pb2.TopologyRequirement(
            requisite=[csi_pb2.Topology(segments={"csi.sluice.dev/zone": "a"})]),
        mutable_parameters={"qos.writeBPS": "1Gi"},
    )
    assert csi_pb2.CreateVolumeRequest.FromString(req.SerializeToString()) == req


def test_stubs_expose_every_service():
    for service in SERVICES:
        assert hasattr(csi_pb2_grpc, f"{service}Stub")
        assert hasattr(csi_pb2_grpc, f"add_{service}Servicer_to_server")


def test_generated_package_cannot_collide_with_proto_plus():
    # proto-plus installs a top-level `proto` package; ours is `sluice_proto`.
    mod = importlib.import_module("sluice_proto")
    assert mod.__name__ == "sluice_proto"
    assert csi_pb2.__name__ == "sluice_proto.csi_pb2"
