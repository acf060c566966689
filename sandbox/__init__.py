"""Real PostgreSQL, consumer, liveness and snapshot stand-ins shared by the demo and the tests.

Nothing here is mocked: clusters are real ``postgres`` processes, the consumer is the real
``pg_recvlogical`` streaming pgoutput or a real streaming-replication client that confirms the
way PowerSync does (``Replicator``), the liveness and PowerSync metrics endpoints are real HTTP
servers. Everything is throwaway, on 127.0.0.1 only, and cleaned up by its owner.
"""

from sandbox.cluster import Cluster
from sandbox.consumer import Consumer, create_slot, powersync_slot_name
from sandbox.installs import InstallMissingError, PgInstall, find_installs, get_install
from sandbox.liveness import LivenessServer
from sandbox.powersync_metrics import PowerSyncMetrics
from sandbox.replicator import Progress, Replicator
from sandbox.snapshot import SnapshotSession
from sandbox.waiting import wait_until

__all__ = [
    "Cluster",
    "Consumer",
    "InstallMissingError",
    "LivenessServer",
    "PgInstall",
    "PowerSyncMetrics",
    "Progress",
    "Replicator",
    "SnapshotSession",
    "create_slot",
    "find_installs",
    "get_install",
    "powersync_slot_name",
    "wait_until",
]
