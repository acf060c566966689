"""Benchmarks, run from the checkout: `.venv/bin/python -m bench.run`."""
