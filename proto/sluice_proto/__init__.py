"""Generated gRPC stubs for the protocols Sluice speaks.

`csi_pb2` / `csi_pb2_grpc`: the CSI spec v1.12.0 (package ``csi.v1``).

The stubs are generated from the ``.proto`` files beside them with grpcio-tools
(``make proto``) and committed; ``tests/unit/test_proto_stubs.py`` checks that
regenerating changes nothing. The package name cannot collide with proto-plus's
top-level ``proto`` package.
"""
