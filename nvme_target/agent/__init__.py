"""The target agent: the Backend interface served over gRPC (server) and used remotely
(client), plus the conversions between the two."""
