"""Real PostgreSQL, consumer, liveness and snapshot stand-ins shared by the demo and the tests.

Nothing here is mocked: clusters are real ``postgres`` processes, the consumer is the real
``pg_recvlogical`` streaming pgoutput, the liveness endpoint is a real HTTP server. Everything is
throwaway, on 127.0.0.1 only, and cleaned up by its owner.
"""

from slotwatch.sandbox.cluster import Cluster
from slotwatch.sandbox.consumer import Consumer, create_slot, powersync_slot_name
from slotwatch.sandbox.installs import InstallMissingError, PgInstall, find_installs, get_install
from slotwatch.sandbox.liveness import LivenessServer
from slotwatch.sandbox.snapshot import SnapshotSession
from slotwatch.sandbox.waiting import wait_until

__all__ = [
    "Cluster",
    "Consumer",
    "InstallMissingError",
    "LivenessServer",
    "PgInstall",
    "SnapshotSession",
    "create_slot",
    "find_installs",
    "get_install",
    "powersync_slot_name",
    "wait_until",
]
