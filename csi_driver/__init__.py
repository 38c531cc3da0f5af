"""Sluice CSI driver: Identity, Controller and Node gRPC services and node-side host adapters."""

__version__ = "0.1.0"
