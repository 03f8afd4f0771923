"""The model server side: the Backend protocol, its gRPC implementation and upstream target checks."""
