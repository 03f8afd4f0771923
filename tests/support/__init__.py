"""Helpers that start real tlserve processes for end-to-end tests and benchmarks."""
