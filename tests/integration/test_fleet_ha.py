"""Two replicas of the same shard (HA) page once, through Alertmanager's grouping.

The story: two `slotwatch run` replicas with the same SLOTWATCH_SHARD watch the same target, a
real Prometheus scrapes both (two `instance`s of job `slotwatch`) and evaluates a short-`for:`
copy of the shipped rules, and a real Alertmanager runs the shipped routing tree with its
receivers pointed at a webhook here. PowerSync's slot is dropped: both replicas report no
matching slot, Prometheus fires PowerSyncSlotMissing once per replica, and the pager receives ONE
notification holding both, because the shipped `group_by` (alertname, target, slot) leaves the
replica's `instance` out. group_wait is shortened from the shipped 30 s to 5 s: still longer
than the replicas' skew (a poll interval and a scrape apart), which is what the shipped value
guarantees in production.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from alerting import write_short_rules
from slotwatch_proc import SlotwatchProcess, free_port
from test_monitoring_e2e import (
    ALERTMANAGER,
    PROMETHEUS,
    PROMETHEUS_JOB_FILE,
    Server,
    Webhook,
    alertmanager_config,
    alerts_in,
    instant,
    slotwatch_job,
)

from sandbox import Cluster, create_slot, get_install, powersync_slot_name
from sandbox.waiting import wait_until

GROUP_WAIT = "5s"
SETTLE = 15.0  # after the page: long enough for a second notification, were there one


def _group_waits(route: dict[str, Any]) -> None:
    route["group_wait"] = GROUP_WAIT
    route["group_interval"] = "5m"  # as shipped: a changed group is not re-sent within the test
    for child in route.get("routes", []):
        _group_waits(child)


def _notifications(webhook: Webhook) -> list[tuple[str, dict[str, Any]]]:
    with webhook.lock:
        return [
            (path, message)
            for path, message in webhook.received
            if message["groupLabels"].get("alertname") == "PowerSyncSlotMissing"
        ]


def test_two_replicas_of_one_shard_page_once(tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        cluster = stack.enter_context(Cluster(get_install("pg15")))
        slot = create_slot(cluster, powersync_slot_name(1))
        client = stack.enter_context(httpx.Client(timeout=5))
        settings = {
            "SLOTWATCH_DSN": cluster.dsn(),
            "SLOTWATCH_TARGET_NAME": "prod",
            "SLOTWATCH_SHARD": "0/1",
            "SLOTWATCH_LIVENESS_URL": "",
            "SLOTWATCH_POLL_INTERVAL": "1s",
            "SLOTWATCH_INACTIVE_AFTER": "1h",  # the slot has no consumer; only its loss matters
        }
        replicas = []
        for k in range(2):
            replica = SlotwatchProcess(settings, tmp_path / f"replica{k}.log")
            stack.callback(replica.stop)
            replica.wait_ready()
            replicas.append(replica)
        addresses = [r.url.removeprefix("http://") for r in replicas]

        webhook = Webhook().start()
        stack.callback(webhook.stop)
        am_config = alertmanager_config(webhook.url)
        _group_waits(am_config["route"])
        am_port, prom_port = free_port(), free_port()
        (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(am_config))
        alertmanager = Server(
            "prometheus-alertmanager",
            [
                ALERTMANAGER,
                f"--config.file={tmp_path / 'alertmanager.yml'}",
                f"--storage.path={tmp_path / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{am_port}",
                "--cluster.listen-address=",
                "--log.level=warn",
            ],
            am_port,
            tmp_path / "alertmanager.log",
        )
        stack.callback(alertmanager.stop)
        job = slotwatch_job(PROMETHEUS_JOB_FILE, addresses[0])
        job["scrape_interval"] = job["scrape_timeout"] = "1s"
        job["static_configs"] = [{"targets": addresses}]
        rules = write_short_rules(tmp_path / "rules.yml", for_="2s", interval="1s")
        prom_config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules)],
            "scrape_configs": [job],
            "alerting": {
                "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]
            },
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(prom_config))
        prometheus = Server(
            "prometheus",
            [
                PROMETHEUS,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'prom-data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
                "--log.level=warn",
            ],
            prom_port,
            tmp_path / "prometheus.log",
        )
        stack.callback(prometheus.stop)
        alertmanager.wait_ready("/-/ready", client)
        prometheus.wait_ready("/-/ready", client)

        # Both replicas are scraped and both see the slot.
        wait_until(
            lambda: len(instant(client, prometheus.url, "slotwatch_matched_slots == 1")) == 2,
            30,
            message="both replicas scraped with the slot",
        )
        cluster.execute("SELECT pg_drop_replication_slot(%s)", (slot,))

        # Each replica's series fires its own alert in Prometheus...
        wait_until(
            lambda: len(alerts_in(client, prometheus.url, "PowerSyncSlotMissing", "firing")) == 2,
            45,
            message="PowerSyncSlotMissing firing for both replicas",
        )
        # ...and the pager hears of it once, with both inside.
        wait_until(
            lambda: webhook.alerts("PowerSyncSlotMissing", "firing"),
            45,
            message="PowerSyncSlotMissing delivered",
        )
        # Proving there is no second page takes time: watch for one through a settle window.
        settle_until = time.monotonic() + SETTLE
        while time.monotonic() < settle_until:
            assert len(_notifications(webhook)) == 1, "paged more than once"
            time.sleep(0.5)  # the pace of the watch, not a wait for a condition
        notifications = _notifications(webhook)
        assert [path for path, _ in notifications] == ["/pager"]
        alerts = notifications[0][1]["alerts"]
        assert {a["labels"]["instance"] for a in alerts} == set(addresses)
        assert {a["labels"]["target"] for a in alerts} == {"prod"}
