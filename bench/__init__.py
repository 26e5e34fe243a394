"""Benchmarks (developer tools, not shipped): step throughput, data pipeline, GPU check."""
