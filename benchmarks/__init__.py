"""Benchmarks of anomalib-simsid: ``python -m benchmarks.suite --config benchmarks/configs/<name>.yaml``."""
