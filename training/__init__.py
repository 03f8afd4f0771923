"""Offline side of tlserve: data → model → train → evaluate → export → repository → promote."""
