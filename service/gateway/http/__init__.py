"""HTTP adapter: the FastAPI app, /predict, TF Serving's REST routes, API keys and JSON translation."""
