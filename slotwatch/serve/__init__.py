"""Showing the latest snapshot: the store, the metrics collector, the read-only endpoints."""
