"""gRPC adapter: TF Serving's PredictionService and ModelService over the shared core, plus health and reflection."""
