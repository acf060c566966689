"""slotwatch: keep a PostgreSQL logical replication slot from silently eating the disk."""

__version__ = "0.1.0"
