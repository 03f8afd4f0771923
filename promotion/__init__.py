"""Model lifecycle against a running model server: promote, roll back, retrain and inspect versions."""
