"""Latency-aware architecture search: design spaces, latency models, the search loop."""
