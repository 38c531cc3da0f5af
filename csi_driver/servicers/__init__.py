"""Thin gRPC servicers: convert the request, call a plain-Python service, convert back.
Typed errors become status codes through sluice_common.grpc_status.translate."""
