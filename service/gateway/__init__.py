"""The gateway: HTTP and gRPC adapters over one core (validation → batching → upstream backend)."""
