"""CSI Identity: who the plugin is, what it offers, whether it is ready."""

from __future__ import annotations

from collections.abc import Callable

from google.protobuf.wrappers_pb2 import BoolValue

from csi_driver import __version__
from sluice_common.grpc_status import translate
from sluice_proto import csi_pb2 as csi
from sluice_proto import csi_pb2_grpc

Service = csi.PluginCapability.Service
Expansion = csi.PluginCapability.VolumeExpansion


class IdentityServicer(csi_pb2_grpc.IdentityServicer):
    def __init__(self, driver_name: str, controller: bool, ready: Callable[[], bool]) -> None:
        self.driver_name = driver_name
        self.controller = controller
        self.ready = ready

    @translate
    def GetPluginInfo(self, request, context):
        return csi.GetPluginInfoResponse(name=self.driver_name, vendor_version=__version__)

    @translate
    def GetPluginCapabilities(self, request, context):
        caps = [csi.PluginCapability(volume_expansion=Expansion(type=Expansion.ONLINE)),
                csi.PluginCapability(service=Service(type=Service.VOLUME_ACCESSIBILITY_CONSTRAINTS))]
        if self.controller:  # the group controller is served with the controller (csi_driver/server.py)
            caps.append(csi.PluginCapability(service=Service(type=Service.CONTROLLER_SERVICE)))
            caps.append(csi.PluginCapability(service=Service(type=Service.GROUP_CONTROLLER_SERVICE)))
        return csi.GetPluginCapabilitiesResponse(capabilities=caps)

    @translate
    def Probe(self, request, context):
        return csi.ProbeResponse(ready=BoolValue(value=self.ready()))
