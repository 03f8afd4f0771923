"""The gateway, by layer: `http/` and `grpc/` adapters over one `core/` (validation → batching → routing), which
calls the model server through `upstream/`. `server.py` builds the one core and runs both adapters over it."""
