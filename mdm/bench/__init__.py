"""Benchmarks (``mdm bench``): simulated devices as load generators against a running server."""
