"""SLOTWATCH_SHARD=i/n: every target in exactly one shard, the same one on every run and machine."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from slotwatch_proc import run_cli

from sandbox.cluster import Cluster
from sandbox.consumer import Consumer
from slotwatch.config.settings import Settings
from slotwatch.config.shard import Shard, hashmod, parse_shard, share

NAMES = [f"db-{k:03d}" for k in range(500)] + ["prod", "staging", "default", "a.b_c-d"]


@dataclass(frozen=True)
class _T:
    name: str


@pytest.mark.parametrize("count", [1, 2, 3, 7, 16])
def test_every_target_is_in_exactly_one_shard(count: int) -> None:
    targets = [_T(n) for n in NAMES]
    owners = Counter(t.name for i in range(count) for t in share(targets, Shard(i, count)))
    assert set(owners) == set(NAMES)
    assert set(owners.values()) == {1}


def test_the_split_is_even_enough_to_share_a_fleet() -> None:
    sizes = [len(share([_T(n) for n in NAMES], Shard(i, 4))) for i in range(4)]
    assert min(sizes) >= len(NAMES) / 4 * 0.75, sizes


def test_a_share_keeps_the_configured_order_and_no_shard_keeps_everything() -> None:
    targets = [_T(n) for n in NAMES]
    assert share(targets, None) == tuple(targets)
    mine = share(targets, Shard(1, 3))
    assert list(mine) == [t for t in targets if t in mine]


# Prometheus' hashmod (relabel.go: md5, the last 8 bytes big-endian, modulo n), worked by hand
# for fixed names (the digests' second halves, from `printf %s prod | md5sum`), so that a change
# of hash or byte order fails here rather than reshuffling a fleet.
@pytest.mark.parametrize(
    ("name", "modulus", "expected"),
    [
        ("prod", 2, int("48baa6dd6150d1f7", 16) % 2),
        ("prod", 10, int("48baa6dd6150d1f7", 16) % 10),
        ("default", 7, int("43e04f8f136e7682", 16) % 7),
    ],
)
def test_the_hash_is_prometheus_hashmod(name: str, modulus: int, expected: int) -> None:
    assert hashmod(name, modulus) == expected


def test_the_split_is_the_same_in_another_interpreter() -> None:
    # str hashing is salted per process; the shard must not be.
    code = (
        "from slotwatch.config.shard import hashmod; "
        f"print([hashmod(n, 5) for n in {NAMES[:50]!r}])"
    )
    env = {"PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout
    assert out.strip() == str([hashmod(n, 5) for n in NAMES[:50]])


@pytest.mark.parametrize(
    ("text", "shard"), [("0/1", Shard(0, 1)), ("1/2", Shard(1, 2)), (" 9/10 ", Shard(9, 10))]
)
def test_a_shard_reads_as_i_of_n(text: str, shard: Shard) -> None:
    assert parse_shard(text) == shard
    assert str(parse_shard(text)) == text.strip()


@pytest.mark.parametrize("text", ["2/2", "1/0", "0/0", "-1/2", "1", "1/2/3", "a/b", "1 / 2", ""])
def test_a_shard_that_is_not_i_of_n_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="i/n"):
        parse_shard(text)


def test_the_setting_is_validated_and_normalised() -> None:
    settings = Settings(dsn="host=x", shard=" 1/3")  # type: ignore[arg-type]
    assert settings.shard == "1/3"
    assert settings.shard_of_targets() == Shard(1, 3)
    assert Settings(dsn="host=x", shard="").shard_of_targets() is None  # type: ignore[arg-type]


def _config(shard: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "SLOTWATCH_SHARD": shard,
        "SLOTWATCH_DSN": "host=127.0.0.1 dbname=app user=watcher password=s3cret-canary",
    }
    code = "from slotwatch.cli import main; raise SystemExit(main(['config']))"
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_config_refuses_a_bad_shard_in_one_line_with_exit_78() -> None:
    done = _config("2/2")
    assert done.returncode == 78
    assert done.stderr.strip().splitlines() == [
        "slotwatch: SLOTWATCH_SHARD: must be i/n with 0 <= i < n (i counts from 0)"
    ]
    assert "s3cret-canary" not in done.stdout + done.stderr


def test_config_shows_the_shard_and_this_replicas_share() -> None:
    done = _config("0/1")
    assert done.returncode == 0, done.stderr
    assert '"shard": "0/1"' in done.stdout
    assert '"shard_targets": [\n    "default"\n  ]' in done.stdout


def test_status_and_check_answer_for_a_target_outside_this_replicas_shard(
    cluster: Cluster, consumer_factory: Callable[..., Consumer], tmp_path: Path
) -> None:
    """docs/fleet.md: only `run` is sharded; `status` and `check` on any replica answer for
    whichever target they are asked about, here one that another replica polls."""
    slot = consumer_factory(cluster).slot_name  # started, its walsender active
    outside = "b"
    inside = next(n for n in ("a", "c", "d", "e") if hashmod(n, 2) != hashmod(outside, 2))
    shard = f"{hashmod(inside, 2)}/2"
    config = tmp_path / "slotwatch.toml"
    config.write_text(
        "".join(
            f'[[targets]]\nname = "{name}"\ndsn = "{cluster.dsn()}"\nliveness_url = ""\n'
            f'slot_pattern = "{slot}"\n'
            for name in (inside, outside)
        )
    )
    env = {"SLOTWATCH_CONFIG": str(config), "SLOTWATCH_SHARD": shard}
    shown = json.loads(run_cli("config", env=env).stdout)
    assert shown["shard_targets"] == [inside], shown
    status = run_cli("status", "--json", "--target", outside, env=env)
    assert status.returncode == 0, status.stderr
    [target] = json.loads(status.stdout)["targets"]
    assert target["target"] == outside
    assert target["up"] is True
    assert [s["slot"] for s in target["slots"]] == [slot]
    check = run_cli("check", "--target", outside, env=env)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.startswith("SLOTWATCH OK"), check.stdout
