"""The container image: built with podman from a local bookworm base, run against a real PostgreSQL.

An operator's story: build the image where no registry is reachable (deploy/container/make-base.sh
debootstraps the base), give it the monitoring role's DSN as a podman secret, run it read-only with
no capabilities on the host network, see /healthz and /metrics answer with the slot's figures, and
`podman stop` it: SIGTERM, exit code 0, well inside the grace period, never a SIGKILL.

Needs root, podman, debootstrap and a Debian mirror; the base root filesystem and the images are
cached (CONTAINER_BASE_CACHE, podman's store), so only the first run pays for debootstrap and pip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from slotwatch_proc import Metrics, free_port

from sandbox.cluster import Cluster
from sandbox.consumer import Consumer, create_slot
from sandbox.waiting import wait_until
from slotwatch import __version__

ROOT = Path(__file__).resolve().parents[2]
CONTAINER_DIR = ROOT / "deploy" / "container"
BASE_IMAGE = "localhost/slotwatch-base:bookworm"
IMAGE = "localhost/slotwatch:ci"
CONTAINER_USER = "65532"
GRACE_SECONDS = 20
# The build stage's pip needs to trust whatever CA this host trusts (TLS-intercepting egress).
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")

pytestmark = pytest.mark.timeout(900)


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed; the container test needs podman and debootstrap")
    return path


def _podman_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINER_DIR / "containers.conf")}


def podman(
    *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [_tool("podman"), *args],
        env=_podman_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        pytest.fail(f"podman {' '.join(args[:2])} failed ({result.returncode}):\n{result.stderr}")
    return result


@pytest.fixture(scope="session")
def image() -> str:
    if os.geteuid() != 0:
        pytest.fail("the container test builds a root filesystem and runs podman as root")
    _tool("debootstrap")
    began = time.monotonic()
    subprocess.run(
        [str(CONTAINER_DIR / "make-base.sh"), BASE_IMAGE],
        env=_podman_env(),
        check=True,
        timeout=600,
    )
    based = time.monotonic()
    secret = ["--secret", f"id=ca,src={HOST_CA_BUNDLE}"] if HOST_CA_BUNDLE.exists() else []
    podman(
        "build",
        # docker format: the OCI image format has no HEALTHCHECK and podman would drop it.
        "--format",
        "docker",
        "--build-arg",
        f"BASE_IMAGE={BASE_IMAGE}",
        "--build-arg",
        f"VERSION={__version__}",
        *secret,
        "--tag",
        IMAGE,
        str(ROOT),
        timeout=600,
    )
    built = time.monotonic()
    print(f"container: base {based - began:.1f}s, build {built - based:.1f}s")
    return IMAGE


@pytest.fixture
def source(cluster_factory: Callable[..., Cluster]) -> Cluster:
    """A PowerSync-like source with the roles from deploy/sql/roles.sql."""
    cluster = cluster_factory()
    with cluster.connect() as conn:
        conn.execute((ROOT / "deploy" / "sql" / "roles.sql").read_bytes())
    return cluster


@pytest.fixture
def dsn_secret(source: Cluster) -> Iterator[str]:
    """The monitoring role's DSN as a podman secret, as the quadlet consumes it."""
    name = f"slotwatch-ci-dsn-{uuid.uuid4().hex[:8]}"
    result = subprocess.run(
        [_tool("podman"), "secret", "create", name, "-"],
        input=source.dsn(user="slotwatch"),
        env=_podman_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    yield name
    podman("secret", "rm", name, check=False)


def test_image_runs_non_root_serves_metrics_and_stops_cleanly_on_sigterm(
    image: str, source: Cluster, dsn_secret: str
) -> None:
    config = podman("image", "inspect", image, "--format", "{{.Config.User}}").stdout.strip()
    assert config == f"{CONTAINER_USER}:{CONTAINER_USER}"

    slot = "powersync_selfhost1_c0de"
    port = free_port()
    name = f"slotwatch-ci-{uuid.uuid4().hex[:8]}"
    create_slot(source, slot)
    with Consumer(source, slot, reconnect=False) as consumer:
        started = podman(
            "run",
            "--detach",
            "--name",
            name,
            "--network",
            "host",
            "--read-only",
            "--cap-drop",
            "all",
            "--security-opt",
            "no-new-privileges",
            # No systemd here to drive podman's health timers; the check is run by hand below.
            "--health-interval",
            "disable",
            # podman 4.3 mounts secrets before --read-only's tmpfs on /run, and cannot create
            # the mount point on the read-only root: give the secrets their own tmpfs.
            "--tmpfs",
            "/run/secrets",
            "--secret",
            f"{dsn_secret},type=mount,target=slotwatch-dsn,"
            f"uid={CONTAINER_USER},gid={CONTAINER_USER},mode=0400",
            "--env",
            "SLOTWATCH_DSN_FILE=/run/secrets/slotwatch-dsn",
            "--env",
            f"SLOTWATCH_LISTEN=127.0.0.1:{port}",
            "--env",
            "SLOTWATCH_LIVENESS_URL=",
            "--env",
            "SLOTWATCH_POLL_INTERVAL=1s",
            image,
            check=False,
        )
        try:
            assert started.returncode == 0, started.stderr
            base = f"http://127.0.0.1:{port}"

            def healthy() -> bool:
                try:
                    return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
                except httpx.TransportError:
                    return False

            wait_until(healthy, 60, message="/healthz answers 200")

            def slot_seen() -> Metrics | None:
                metrics = Metrics(httpx.get(f"{base}/metrics", timeout=5).text)
                return metrics if metrics.value("slotwatch_slot_active", slot=slot) else None

            metrics = wait_until(slot_seen, 30, message="the streaming slot appears in /metrics")
            assert metrics.value("slotwatch_up", target="default") == 1
            assert metrics.value("slotwatch_matched_slots", target="default") == 1
            # pg_monitor at work inside the container: pg_wal's size is readable.
            wal_bytes = metrics.value("slotwatch_wal_directory_bytes", target="default")
            assert wal_bytes is not None
            assert wal_bytes > 0

            # The image's own HEALTHCHECK, run the way podman's timer would.
            check = podman("healthcheck", "run", name, check=False)
            assert check.returncode == 0, check.stdout + check.stderr

            uid = podman("exec", name, "id", "-u").stdout.strip()
            assert uid == CONTAINER_USER

            began = time.monotonic()
            podman("stop", "--time", str(GRACE_SECONDS), name, timeout=GRACE_SECONDS + 30)
            stop_seconds = time.monotonic() - began
            print(f"container: podman stop took {stop_seconds:.1f}s")
            state = podman(
                "inspect", name, "--format", "{{.State.ExitCode}} {{.State.Status}}"
            ).stdout.split()
            logs = podman("logs", name).stdout + podman("logs", name).stderr
            assert state == ["0", "exited"], logs
            # Well inside the grace period: the process left on SIGTERM, podman never killed it.
            assert stop_seconds < GRACE_SECONDS / 2, (stop_seconds, logs)
            assert consumer.running
        finally:
            podman("rm", "--force", "--time", "0", name, check=False)


def test_image_healthcheck_fails_when_nothing_answers(image: str) -> None:
    # The same HEALTHCHECK that passed above must fail when slotwatch is not serving: otherwise
    # it proves nothing.
    name = f"slotwatch-ci-idle-{uuid.uuid4().hex[:8]}"
    podman(
        "run",
        "--detach",
        "--name",
        name,
        "--network",
        "host",
        "--health-interval",
        "disable",
        "--env",
        f"SLOTWATCH_LISTEN=127.0.0.1:{free_port()}",
        "--entrypoint",
        "sleep",
        image,
        "60",
    )
    try:
        check = podman("healthcheck", "run", name, check=False)
        assert check.returncode != 0
        assert "unhealthy" in check.stdout + check.stderr
    finally:
        podman("rm", "--force", "--time", "0", name, check=False)


def test_image_version_label_is_the_package_version(image: str) -> None:
    shown = podman("image", "inspect", "--format", "{{json .Labels}}", image).stdout
    labels = json.loads(shown)
    assert labels["org.opencontainers.image.version"] == __version__


@pytest.mark.usefixtures("image")  # the base image, and a warm layer cache
def test_build_refuses_a_version_other_than_the_package_version() -> None:
    result = podman(
        "build",
        "--format",
        "docker",
        "--build-arg",
        f"BASE_IMAGE={BASE_IMAGE}",
        "--build-arg",
        "VERSION=9.9.9",
        "--tag",
        "localhost/slotwatch:wrong-version",
        str(ROOT),
        timeout=600,
        check=False,
    )
    podman("rmi", "--ignore", "localhost/slotwatch:wrong-version", check=False)
    assert result.returncode != 0
    assert f"pass --build-arg VERSION={__version__}" in result.stderr + result.stdout
