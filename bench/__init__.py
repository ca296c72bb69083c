"""Benchmarks (`dwcp-inference bench`, `python -m dwcp_inference.bench.overload`): ghz drives the load."""
