"""Online side of tlserve: the gateway (HTTP, gRPC) and the embedded model server."""
