"""Showing the latest snapshot: the store, the metric table and its rendering, the endpoints."""
