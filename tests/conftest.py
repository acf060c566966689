"""Fixtures over the real sandbox: PostgreSQL 13, 15 and 18 clusters, pg_recvlogical, a
PowerSync-like stream client and metrics endpoint, HTTP, snapshots.

Every test that takes ``pg_install`` (directly or through ``cluster``/``cluster_factory``) runs
once per install, with ids ``pg13``, ``pg15`` and ``pg18``: the oldest major slotwatch supports,
Debian 12's, and the newest. A missing install fails the run with what to install: a database
test that silently skips proves nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from slotwatch_proc import SlotwatchFactory, SlotwatchProcess

from sandbox.cluster import Cluster
from sandbox.consumer import Consumer, create_slot, powersync_slot_name
from sandbox.installs import KNOWN_INSTALLS, InstallMissingError, PgInstall, get_install
from sandbox.liveness import LivenessServer
from sandbox.osuser import ServerUserMissingError
from sandbox.powersync_metrics import PowerSyncMetrics
from sandbox.replicator import Replicator
from sandbox.snapshot import SnapshotSession
from sandbox.waiting import wait_until

LOG_TAIL_CHARS = 6000
ClientT = TypeVar("ClientT", Consumer, Replicator)  # a slot's streaming client


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    # Lets fixtures see whether their test failed, to print the server log only then.
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"report_{report.when}", report)


def _failed(request: pytest.FixtureRequest) -> bool:
    report = getattr(request.node, "report_call", None)
    return bool(report is not None and report.failed)


def _show_log(cluster: Cluster) -> None:
    print(f"--- PostgreSQL log of {cluster.install.name} on port {cluster.port} (tail) ---")
    print(cluster.log_text()[-LOG_TAIL_CHARS:])


@pytest.fixture(scope="session", params=KNOWN_INSTALLS, ids=KNOWN_INSTALLS)
def pg_install(request: pytest.FixtureRequest) -> PgInstall:
    """One install per parameter: ``pg13`` (npm package), ``pg15`` (Debian), ``pg18`` (wheel)."""
    try:
        return get_install(request.param)
    except (InstallMissingError, ServerUserMissingError) as exc:
        pytest.fail(f"PostgreSQL install {request.param} unavailable: {exc}", pytrace=False)


@pytest.fixture
def cluster_factory(
    pg_install: PgInstall, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Cluster]]:
    """``cluster_factory(**Cluster kwargs) -> Cluster``: started, destroyed after the test.

    Keyword arguments are :class:`Cluster`'s: ``max_slot_wal_keep_size``, ``wal_sender_timeout``,
    ``max_wal_size``, ``min_wal_size``, ``settings={guc: value}``.
    """
    made: list[Cluster] = []

    def make(**kwargs: Any) -> Cluster:
        cluster = Cluster(pg_install, **kwargs)
        made.append(cluster)
        return cluster.start()

    yield make
    for cluster in made:
        if _failed(request):
            _show_log(cluster)
        cluster.destroy()


@pytest.fixture(scope="module")
def cluster(pg_install: PgInstall) -> Iterator[Cluster]:
    """A default cluster shared by one test module, per install; tests must use their own slots."""
    with Cluster(pg_install) as shared:
        yield shared


def _slot_clients(kind: type[ClientT]) -> Iterator[Callable[..., ClientT]]:
    """The body of ``consumer_factory`` and ``replicator_factory``, which differ only in ``kind``:
    make clients of ``kind``, remember them, and tear every one down after the test."""
    made: list[tuple[ClientT, bool]] = []

    def make(
        cluster: Cluster,
        slot_name: str | None = None,
        *,
        sync_rules_id: int = 1,
        create: bool = True,
        drop: bool | None = None,
        start: bool = True,
        **kwargs: Any,
    ) -> ClientT:
        name = slot_name or powersync_slot_name(sync_rules_id)
        if create:
            create_slot(cluster, name)
        client = kind(cluster, name, **kwargs)
        made.append((client, create if drop is None else drop))
        if start:
            client.start()
        return client

    yield make
    for client, drop_slot in made:
        client.destroy()
        if drop_slot and client.cluster.running:
            _drop_slot(client.cluster, client.slot_name)


@pytest.fixture
def consumer_factory() -> Iterator[Callable[..., Consumer]]:
    """``consumer_factory(cluster, slot_name=None, *, sync_rules_id=1, create=True, drop=None,
    start=True, **Consumer kwargs) -> Consumer``.

    Without ``slot_name`` a fresh PowerSync-style name is drawn. At teardown every consumer is
    stopped and every slot the factory created (or was told to ``drop``: one the test creates
    itself later) is dropped, so tests sharing a cluster never see each other's slots.
    """
    yield from _slot_clients(Consumer)


@pytest.fixture
def replicator_factory() -> Iterator[Callable[..., Replicator]]:
    """``replicator_factory(cluster, slot_name=None, *, sync_rules_id=1, create=True, drop=None,
    start=True, **Replicator kwargs) -> Replicator``: a stream client that confirms like PowerSync.

    As ``consumer_factory``: a fresh PowerSync-style slot name unless one is given; at teardown
    every client is stopped and every slot the factory created (or was told to ``drop``) is
    dropped.
    """
    yield from _slot_clients(Replicator)


@pytest.fixture
def powersync_metrics() -> Iterator[Callable[..., PowerSyncMetrics]]:
    """``powersync_metrics(lag_seconds=None) -> PowerSyncMetrics``: PowerSync's own Prometheus
    endpoint, started; stopped after the test."""
    made: list[PowerSyncMetrics] = []

    def make(lag_seconds: float | None = None) -> PowerSyncMetrics:
        server = PowerSyncMetrics(lag_seconds)
        made.append(server)
        return server.start()

    yield make
    for server in made:
        server.stop()


def _drop_slot(cluster: Cluster, name: str) -> None:
    # The walsender outlives its client by a moment; the slot can only go once it is released.
    def released() -> bool:
        row = cluster.slot(name)
        return row is None or not row["active"]

    wait_until(released, 10, message=f"slot {name} released")
    cluster.execute(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
        " WHERE slot_name = %s AND NOT active",
        (name,),
    )


@pytest.fixture
def liveness_server() -> Iterator[Callable[..., LivenessServer]]:
    """``liveness_server(mode="ok") -> LivenessServer``, started; stopped after the test."""
    made: list[LivenessServer] = []

    def make(mode: str = "ok") -> LivenessServer:
        server = LivenessServer(mode)
        made.append(server)
        return server.start()

    yield make
    for server in made:
        server.stop()


@pytest.fixture
def snapshot_session() -> Iterator[Callable[..., SnapshotSession]]:
    """``snapshot_session(cluster, application_name="powersync/1.0", **kw) -> SnapshotSession``,
    busy once returned; cancelled after the test."""
    made: list[SnapshotSession] = []

    def make(cluster: Cluster, *args: Any, **kwargs: Any) -> SnapshotSession:
        session = SnapshotSession(cluster, *args, **kwargs)
        made.append(session)
        return session.start()

    yield make
    for session in made:
        session.stop()


# One real `slotwatch run` per call, shared by the scenario and fidelity stories.
@pytest.fixture
def slotwatch(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[SlotwatchFactory]:
    """``slotwatch(env) -> SlotwatchProcess``, serving; stopped (and checked to exit 0) after."""
    made: list[SlotwatchProcess] = []

    def make(env: dict[str, str]) -> SlotwatchProcess:
        process = SlotwatchProcess(env, tmp_path / f"slotwatch-{len(made)}.log")
        made.append(process)
        process.wait_ready()
        return process

    yield make
    for process in made:
        code = process.stop()
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            print(f"--- slotwatch log ({process.log_path}) ---")
            print(process.log_path.read_text()[-8000:])
        assert code == 0, f"slotwatch exited {code}"
