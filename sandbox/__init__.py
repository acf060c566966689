"""Real PostgreSQL, consumer, liveness and snapshot stand-ins shared by the demo and the tests.

Nothing here is mocked: clusters are real ``postgres`` processes, the consumer is the real
``pg_recvlogical`` streaming pgoutput, the liveness endpoint is a real HTTP server. Everything is
throwaway, on 127.0.0.1 only, and cleaned up by its owner.
"""

from sandbox.cluster import Cluster
from sandbox.consumer import Consumer, create_slot, powersync_slot_name
from sandbox.installs import InstallMissingError, PgInstall, find_installs, get_install
from sandbox.liveness import LivenessServer
from sandbox.snapshot import SnapshotSession
from sandbox.waiting import wait_until

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
