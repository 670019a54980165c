"""Benchmarking: one result schema, the log parser, host / benchmark_model runners, sweeps."""
