"""End to end through the monitoring stack: slotwatch scraped by Prometheus and VictoriaMetrics,
every dashboard query answered by both, and a wedged slot paged through vmalert to Alertmanager.

The story an operator lives: PostgreSQL with a PowerSync-named slot streamed by a real
pg_recvlogical, an application writing to published tables, PowerSync's liveness endpoint, and
`slotwatch run` polling every second. A real Prometheus and a real VictoriaMetrics single node
scrape it with the shipped scrape jobs (job `slotwatch`); every query of every panel of the
shipped dashboard returns data from both. vmalert evaluates a short-`for:` copy of the shipped
rules against VictoriaMetrics and notifies a real Alertmanager that runs the shipped routing tree
and inhibit rules, with its receivers pointed at a webhook server in this process. The consumer
is frozen (SIGSTOP, connection kept open, as a hung PowerSync looks) while writes go on:
PowerSyncSlotWedged fires in vmalert (and in Prometheus, which loads the same rules), reaches
Alertmanager with severity=page, target and slot, and is delivered to the `pager` receiver.
After SIGCONT it resolves. Then a slot PowerSync does not own (PowerSync Cloud's, left behind)
holds WAL: ForeignSlotRetainingWAL opens a ticket with its owner guess, and resolves once the slot
is dropped in SQL. Last, slotwatch itself stops: SlotwatchDown pages for its instance,
and no slot alert fires on the stale series.

Only PostgreSQL 18 runs here: what is under test is the monitoring stack's reading of the metrics,
not how each major fills them (tests/integration/test_daemon.py and test_scenarios.py prove the
metrics and the wedged story on 15 and 18). A second major would double the runtime (about 30 s)
and prove nothing these files do not.

Grafana itself is not run: the dashboard's queries are substituted here as Grafana substitutes
them (tests/dashboards.py), so panel rendering, units and thresholds are not covered.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from alerting import REPO, iter_alerts, load_rules, write_short_rules
from dashboards import load_dashboard, runnable_queries
from slotwatch_proc import SlotwatchProcess, free_port

from sandbox.cluster import Cluster
from sandbox.consumer import Consumer
from sandbox.liveness import LivenessServer
from sandbox.waiting import wait_until
from sandbox.writer import Writer

PROMETHEUS = "/usr/bin/prometheus"
VICTORIA_METRICS = "/usr/bin/victoria-metrics"
VMALERT = "/usr/bin/vmalert"
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"

PROMETHEUS_JOB_FILE = REPO / "deploy" / "prometheus" / "prometheus.yml"
VM_SCRAPE_FILE = REPO / "deploy" / "victoriametrics" / "scrape.yml"
ALERTMANAGER_FILE = REPO / "deploy" / "alertmanager" / "alertmanager.yml"

TARGET = "default"
POLL = 1.0
STALL = 3.0
SCRAPE = "1s"
# Grafana's $__rate_interval is at least four scrape intervals; a little more keeps rate() fed
# when one scrape lands late on a loaded 2-core box.
RATE_INTERVAL = "6s"
FOR = "3s"
# Room to spare for a loaded machine; a healthy run needs a fraction of each.
SERVER_START = 30.0
DASHBOARD_DEADLINE = 30.0
ALERT_DEADLINE = 45.0

ONE_MAJOR = pytest.mark.parametrize("pg_install", ["pg18"], indirect=True)

# PowerSync Cloud's slot, left behind after the move to self-hosting (default prefix powersync_).
FOREIGN = "powersync_1_a0b1"
# The writer cannot fill the shipped 1 GiB in seconds: the copy of the rules asks for 1 MiB.
FOREIGN_SIZES = {"ForeignSlotRetainingWAL": {"1 * 1024 * 1024 * 1024": "1 * 1024 * 1024"}}


# --- the servers ------------------------------------------------------------------------------


class Server:
    """One monitoring binary as a child process, its output in a log file; SIGTERM to stop."""

    def __init__(self, name: str, argv: list[str], port: int, log_path: Path) -> None:
        if not Path(argv[0]).is_file():
            # A missing component must fail the run, never skip it (CI installs the packages).
            pytest.fail(f"{argv[0]} is missing: apt-get install {name}", pytrace=False)
        self.name = name
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
        )

    def wait_ready(self, path: str, client: httpx.Client) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited {self.proc.returncode}: {self.log()}")
            try:
                return client.get(self.url + path).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, SERVER_START, interval=0.1, message=f"{self.name} ready")

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-6000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


@dataclass
class Webhook:
    """An Alertmanager webhook receiver: records every notification's path and JSON body."""

    received: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    def start(self) -> Webhook:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - base signature
                """Quiet: Alertmanager's deliveries are asserted on, not printed."""

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with owner.lock:
                    owner.received.append((self.path, json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, name="webhook", daemon=True).start()
        return self

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def alerts(self, alertname: str, status: str) -> list[tuple[str, dict[str, Any]]]:
        """(receiver path, alert) for every delivered alert named `alertname` in `status`."""
        with self.lock:
            return [
                (path, alert)
                for path, message in self.received
                for alert in message["alerts"]
                if alert["labels"].get("alertname") == alertname and alert["status"] == status
            ]

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def wait_for_scrapes(
    client: httpx.Client, datasources: Mapping[str, str], slot: str, count: int = 4
) -> None:
    """Both servers answer with `count` scrapes of a healthy slot: enough for rate().

    VictoriaMetrics makes a new series searchable only seconds after its first sample (about
    6 s measured with 1.79), so this is also the moment its answers become complete.
    """
    query = f'count_over_time(slotwatch_slot_state{{slot="{slot}", state="healthy"}}[30s])'

    def scraped() -> dict[str, float]:
        seen = {}
        for name, base in datasources.items():
            result = instant(client, base, query)
            seen[name] = float(result[0]["value"][1]) if result else 0.0
        return seen if all(n >= count for n in seen.values()) else {}

    wait_until(scraped, 30, interval=0.25, message=f"{count} scrapes in both servers")


def vmalert_evaluations(client: httpx.Client, base: str) -> float:
    """How many times vmalert has evaluated the slotwatch group, from its own /metrics."""
    text = client.get(base + "/metrics").text
    for line in text.splitlines():
        if line.startswith("vmalert_iteration_total{") and 'group="slotwatch"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# --- configuration derived from the shipped files ---------------------------------------------


def slotwatch_job(shipped: Path, address: str) -> dict[str, Any]:
    """The shipped `slotwatch` scrape job, pointed at `address` and scraped every second."""
    doc = yaml.safe_load(shipped.read_text(encoding="utf-8"))
    [job] = [j for j in doc["scrape_configs"] if j["job_name"] == "slotwatch"]
    job["scrape_interval"] = SCRAPE
    job["scrape_timeout"] = SCRAPE
    job["static_configs"] = [{"targets": [address]}]
    return dict(job)


def prometheus_config(address: str, rules: Path) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": SCRAPE, "evaluation_interval": SCRAPE},
        "rule_files": [str(rules)],
        "scrape_configs": [slotwatch_job(PROMETHEUS_JOB_FILE, address)],
    }


def alertmanager_config(webhook_url: str) -> dict[str, Any]:
    """The shipped routing tree and inhibit rules; every receiver a webhook at /<receiver>.

    Waits are shortened so a notification leaves within a second of the alert arriving.
    """
    doc: dict[str, Any] = yaml.safe_load(ALERTMANAGER_FILE.read_text(encoding="utf-8"))

    def shorten(route: dict[str, Any]) -> None:
        for key in ("group_wait", "group_interval"):
            if key in route:
                route[key] = "1s"
        for child in route.get("routes", []):
            shorten(child)

    doc["route"]["group_wait"] = "1s"
    doc["route"]["group_interval"] = "1s"
    shorten(doc["route"])
    doc["receivers"] = [
        {
            "name": receiver["name"],
            "webhook_configs": [
                {"url": f"{webhook_url}/{receiver['name']}", "send_resolved": True}
            ],
        }
        for receiver in doc["receivers"]
    ]
    return doc


# --- HTTP API reading -------------------------------------------------------------------------


def instant(client: httpx.Client, base: str, query: str) -> list[dict[str, Any]]:
    """The result of an instant query at now; raises on an error answer."""
    response = client.get(base + "/api/v1/query", params={"query": query})
    body = response.json()
    if response.status_code != 200 or body.get("status") != "success":
        raise AssertionError(f"{base} refused {query!r}: {response.status_code} {body}")
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def label_values(client: httpx.Client, base: str, label: str, match: str) -> list[str]:
    response = client.get(f"{base}/api/v1/label/{label}/values", params={"match[]": match})
    response.raise_for_status()
    values: list[str] = response.json()["data"]
    return values


def alerts_in(client: httpx.Client, base: str, name: str, state: str) -> list[dict[str, Any]]:
    """Alerts named `name` in `state` from /api/v1/alerts (Prometheus and vmalert alike)."""
    return [
        alert
        for alert in all_alerts(client, base)
        if alert["labels"].get("alertname") == name and alert["state"] == state
    ]


def all_alerts(client: httpx.Client, base: str) -> list[dict[str, Any]]:
    """Every pending or firing alert (vmalert answers null for none)."""
    response = client.get(base + "/api/v1/alerts")
    response.raise_for_status()
    found: list[dict[str, Any]] = response.json()["data"]["alerts"] or []
    return found


def alertmanager_alerts(client: httpx.Client, base: str, name: str) -> list[dict[str, Any]]:
    response = client.get(base + "/api/v2/alerts", params={"filter": f'alertname="{name}"'})
    response.raise_for_status()
    found: list[dict[str, Any]] = response.json()
    return found


# --- the stage --------------------------------------------------------------------------------


@dataclass
class Stage:
    cluster: Cluster
    consumer: Consumer
    slotwatch: SlotwatchProcess
    prometheus: Server
    victoria: Server
    vmalert: Server
    alertmanager: Server
    webhook: Webhook
    writer: Writer
    client: httpx.Client
    started: float

    @property
    def slot(self) -> str:
        return self.consumer.slot_name

    @property
    def datasources(self) -> dict[str, str]:
        return {"prometheus": self.prometheus.url, "victoriametrics": self.victoria.url}


@pytest.fixture
def stage(
    tmp_path: Path,
    request: pytest.FixtureRequest,
    cluster_factory: Callable[..., Cluster],
    consumer_factory: Callable[..., Consumer],
    liveness_server: Callable[..., LivenessServer],
) -> Iterator[Stage]:
    started = time.monotonic()
    # A limited max_slot_wal_keep_size gives the budget panels (budget line, ratio, ETA) data;
    # 8GB keeps a minute of this writer far from at_risk (20% left, or an ETA under the hour),
    # so the frozen consumer reads wedged, not at_risk. wal_sender_timeout=0: a hung consumer
    # keeps its walsender, as PowerSync behind a default Supabase pooler does.
    cluster = cluster_factory(max_slot_wal_keep_size="8GB", wal_sender_timeout="0")
    consumer = consumer_factory(cluster)
    liveness = liveness_server("ok")
    with contextlib.ExitStack() as stack:
        # Every step registers its own undo, so a failing start or stop still runs the rest.
        client = stack.enter_context(httpx.Client(timeout=5))

        def failed() -> bool:
            report = getattr(request.node, "report_call", None)
            return bool(report is not None and report.failed)

        def stop(made: Server | SlotwatchProcess, name: str) -> None:
            try:
                made.stop()
            finally:
                if failed():
                    log = made.log_path.read_text(errors="replace")[-6000:]
                    print(f"--- {name} log (tail) ---\n{log}")

        writer = Writer(cluster).start()
        stack.callback(writer.stop)
        sw = SlotwatchProcess(
            {
                "SLOTWATCH_DSN": cluster.dsn(),
                "SLOTWATCH_LIVENESS_URL": liveness.url,
                "SLOTWATCH_POLL_INTERVAL": f"{POLL:g}s",
                "SLOTWATCH_PROBE_INTERVAL": "1s",
                "SLOTWATCH_PROBE_TIMEOUT": "1s",
                "SLOTWATCH_STALL_AFTER": f"{STALL:g}s",
                "SLOTWATCH_INACTIVE_AFTER": "2s",
                "SLOTWATCH_LAG_FLOOR_BYTES": str(64 * 1024),
            },
            tmp_path / "slotwatch.log",
        )
        stack.callback(stop, sw, "slotwatch")
        sw.wait_ready()
        address = sw.url.removeprefix("http://")

        rules = write_short_rules(
            tmp_path / "rules.yml", for_=FOR, interval=SCRAPE, sizes=FOREIGN_SIZES
        )
        webhook = Webhook().start()
        stack.callback(webhook.stop)

        def server(name: str, argv: list[str], port: int) -> Server:
            made = Server(name, argv, port, tmp_path / f"{name}.log")
            stack.callback(stop, made, name)
            return made

        prom_port, vm_port, am_port, vmalert_port = (free_port() for _ in range(4))
        prom_yml = tmp_path / "prometheus.yml"
        prom_yml.write_text(yaml.safe_dump(prometheus_config(address, rules)))
        prometheus = server(
            "prometheus",
            [
                PROMETHEUS,
                f"--config.file={prom_yml}",
                f"--storage.tsdb.path={tmp_path / 'prometheus-data'}",
                "--storage.tsdb.retention.time=1h",
                f"--web.listen-address=127.0.0.1:{prom_port}",
                "--log.level=warn",
            ],
            prom_port,
        )
        vm_yml = tmp_path / "vm-scrape.yml"
        vm_yml.write_text(
            yaml.safe_dump({"scrape_configs": [slotwatch_job(VM_SCRAPE_FILE, address)]})
        )
        victoria = server(
            "victoria-metrics",
            [
                VICTORIA_METRICS,
                f"-storageDataPath={tmp_path / 'vm-data'}",
                "-retentionPeriod=1d",
                f"-httpListenAddr=127.0.0.1:{vm_port}",
                f"-promscrape.config={vm_yml}",
                "-promscrape.config.strictParse=true",
                # Samples are queryable the moment they land, not 30s later; no response cache,
                # so a query sent again sees the scrapes made since.
                "-search.latencyOffset=0s",
                "-search.disableCache",
                "-loggerLevel=WARN",
            ],
            vm_port,
        )
        am_yml = tmp_path / "alertmanager.yml"
        am_yml.write_text(yaml.safe_dump(alertmanager_config(webhook.url)))
        alertmanager = server(
            "prometheus-alertmanager",
            [
                ALERTMANAGER,
                f"--config.file={am_yml}",
                f"--storage.path={tmp_path / 'alertmanager-data'}",
                f"--web.listen-address=127.0.0.1:{am_port}",
                "--cluster.listen-address=",
                "--log.level=warn",
            ],
            am_port,
        )
        for made, path in (
            (prometheus, "/-/ready"),
            (victoria, "/health"),
            (alertmanager, "/-/ready"),
        ):
            made.wait_ready(path, client)
        # vmalert starts once VictoriaMetrics answers completely: before, slotwatch's series
        # are absent there and SlotwatchDown's absent() branch would rightly go pending.
        wait_for_scrapes(
            client,
            {"prometheus": prometheus.url, "victoriametrics": victoria.url},
            consumer.slot_name,
        )
        vmalert = server(
            "vmalert",
            [
                VMALERT,
                f"-rule={rules}",
                f"-datasource.url={victoria.url}",
                f"-notifier.url={alertmanager.url}",
                f"-httpListenAddr=127.0.0.1:{vmalert_port}",
                "-evaluationInterval=1s",
                "-loggerLevel=WARN",
            ],
            vmalert_port,
        )
        vmalert.wait_ready("/health", client)
        yield Stage(
            cluster=cluster,
            consumer=consumer,
            slotwatch=sw,
            prometheus=prometheus,
            victoria=victoria,
            vmalert=vmalert,
            alertmanager=alertmanager,
            webhook=webhook,
            writer=writer,
            client=client,
            started=started,
        )


# --- the story --------------------------------------------------------------------------------


def dashboard_gaps(stage: Stage) -> list[str]:
    """Every (server, variables, panel query) that returns no data, described for a failure."""
    dashboard = load_dashboard()
    gaps = []
    pinned = {"target": TARGET, "slot": stage.slot}
    for variables in ({}, pinned):
        for query in runnable_queries(dashboard, {**variables, "__rate_interval": RATE_INTERVAL}):
            for name, base in stage.datasources.items():
                result = instant(stage.client, base, query.expr)
                if not result:
                    gaps.append(
                        f"{name}: panel {query.panel_id} {query.panel_title!r} {query.ref_id}"
                        f" ({'pinned' if variables else 'All'}): {query.expr}"
                    )
    return gaps


@ONE_MAJOR
def test_every_panel_has_data_in_both_and_a_frozen_consumer_pages(stage: Stage) -> None:
    # The dashboard's variables: Grafana runs label_values() through the label values API.
    for name, base in stage.datasources.items():
        assert TARGET in label_values(stage.client, base, "target", "slotwatch_up"), name
        assert stage.slot in label_values(
            stage.client, base, "slot", f'slotwatch_slot_state{{target=~"{TARGET}"}}'
        ), name

    # Each query once more until all have data (a fresh series may miss one scrape), then the
    # full list of those still empty.
    last: list[str] = []

    def all_answered() -> bool:
        nonlocal last
        last = dashboard_gaps(stage)
        return not last

    try:
        wait_until(all_answered, DASHBOARD_DEADLINE, interval=1.0)
    except TimeoutError:
        pytest.fail("panel queries without data:\n" + "\n".join(last), pytrace=False)
    dashboard_done = time.monotonic() - stage.started

    # A healthy slot pages nobody: after a few evaluations of the shipped rules, none is even
    # pending in vmalert, and none fires in Prometheus, which has evaluated them from the start.
    wait_until(
        lambda: vmalert_evaluations(stage.client, stage.vmalert.url) >= 3,
        10,
        interval=0.2,
        message="three vmalert evaluations",
    )
    assert all_alerts(stage.client, stage.vmalert.url) == []
    assert [
        a for a in all_alerts(stage.client, stage.prometheus.url) if a["state"] == "firing"
    ] == []
    assert alertmanager_alerts(stage.client, stage.alertmanager.url, "PowerSyncSlotWedged") == []

    # Both evaluators run every shipped rule, and none fails to evaluate (a query VictoriaMetrics
    # or Prometheus rejects would show here, not as a missing page months later).
    shipped = sorted(rule["alert"] for rule in iter_alerts(load_rules()))
    for evaluator in (stage.vmalert, stage.prometheus):
        rules = stage.client.get(evaluator.url + "/api/v1/rules").json()["data"]["groups"]
        evaluated = [rule for group in rules for rule in group["rules"]]
        assert sorted(rule["name"] for rule in evaluated) == shipped, evaluator.name
        broken = [
            (rule["name"], rule.get("lastError")) for rule in evaluated if rule.get("lastError")
        ]
        assert broken == [], f"rules failing in {evaluator.name}: {broken}"

    # PowerSync hangs: its connection stays open, nothing is confirmed, WAL keeps coming.
    paused_at = time.monotonic()
    stage.consumer.pause()
    labels = {"severity": "page", "target": TARGET, "slot": stage.slot}

    def firing_in_vmalert() -> list[dict[str, Any]]:
        return alerts_in(stage.client, stage.vmalert.url, "PowerSyncSlotWedged", "firing")

    def in_alertmanager() -> list[dict[str, Any]]:
        return [
            alert
            for alert in alertmanager_alerts(
                stage.client, stage.alertmanager.url, "PowerSyncSlotWedged"
            )
            if alert["status"]["state"] == "active"
            and all(alert["labels"].get(k) == v for k, v in labels.items())
        ]

    firing = wait_until(firing_in_vmalert, ALERT_DEADLINE, interval=0.2, message="vmalert firing")
    vmalert_latency = time.monotonic() - paused_at
    [arrived] = wait_until(
        in_alertmanager, ALERT_DEADLINE, interval=0.2, message="wedged alert in Alertmanager"
    )
    alertmanager_latency = time.monotonic() - paused_at
    delivered = wait_until(
        lambda: stage.webhook.alerts("PowerSyncSlotWedged", "firing"),
        ALERT_DEADLINE,
        interval=0.2,
        message="wedged alert delivered to the webhook",
    )
    delivered_latency = time.monotonic() - paused_at
    prometheus_firing = wait_until(
        lambda: alerts_in(stage.client, stage.prometheus.url, "PowerSyncSlotWedged", "firing"),
        ALERT_DEADLINE,
        interval=0.2,
        message="Prometheus firing",
    )

    assert {k: firing[0]["labels"].get(k) for k in labels} == labels
    assert {k: prometheus_firing[0]["labels"].get(k) for k in labels} == labels
    annotations = arrived["annotations"]
    assert annotations["runbook_url"].endswith("#powersyncslotwedged"), annotations
    assert stage.slot in annotations["summary"], annotations
    # The description carries the stall, humanized: at least the stall window, never "0s".
    assert "has not confirmed anything for " in annotations["description"], annotations
    assert "for 0s" not in annotations["description"], annotations
    # The shipped route sends severity=page to the pager receiver.
    paths = {path for path, _ in delivered}
    assert paths == {"/pager"}, paths
    # $value is the stall in seconds (NaN compares false, so it fails here too).
    assert float(firing[0]["value"]) >= STALL, firing[0]

    # PowerSync recovers: the slot confirms again and the page resolves end to end.
    stage.consumer.resume()
    resumed_at = time.monotonic()
    wait_until(
        lambda: not in_alertmanager(), ALERT_DEADLINE, interval=0.2, message="resolved in AM"
    )
    wait_until(
        lambda: stage.webhook.alerts("PowerSyncSlotWedged", "resolved"),
        ALERT_DEADLINE,
        interval=0.2,
        message="resolved notification delivered",
    )
    resolved_latency = time.monotonic() - resumed_at

    # A slot PowerSync does not own, read by nobody, holds WAL: a ticket (not a page) names it
    # with its owner guess, goes to the tickets receiver, and resolves once it is dropped in SQL.
    stage.cluster.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (FOREIGN,))
    created_at = time.monotonic()
    ticket = {"severity": "ticket", "target": TARGET, "slot": FOREIGN, "owner": "powersync"}

    def ticket_in_alertmanager() -> list[dict[str, Any]]:
        return [
            alert
            for alert in alertmanager_alerts(
                stage.client, stage.alertmanager.url, "ForeignSlotRetainingWAL"
            )
            if alert["status"]["state"] == "active"
            and all(alert["labels"].get(k) == v for k, v in ticket.items())
        ]

    foreign_firing = wait_until(
        lambda: alerts_in(stage.client, stage.vmalert.url, "ForeignSlotRetainingWAL", "firing"),
        ALERT_DEADLINE,
        interval=0.2,
        message="foreign-slot ticket firing in vmalert",
    )
    assert {k: foreign_firing[0]["labels"].get(k) for k in ticket} == ticket
    assert float(foreign_firing[0]["value"]) > 1024 * 1024  # $value: the bytes it holds
    [foreign_arrived] = wait_until(
        ticket_in_alertmanager, ALERT_DEADLINE, interval=0.2, message="ticket in Alertmanager"
    )
    assert foreign_arrived["annotations"]["runbook_url"].endswith("#foreignslotretainingwal")
    ticketed = wait_until(
        lambda: stage.webhook.alerts("ForeignSlotRetainingWAL", "firing"),
        ALERT_DEADLINE,
        interval=0.2,
        message="ticket delivered",
    )
    assert {path for path, _ in ticketed} == {"/tickets"}
    foreign_latency = time.monotonic() - created_at
    wait_until(
        lambda: alerts_in(stage.client, stage.prometheus.url, "ForeignSlotRetainingWAL", "firing"),
        ALERT_DEADLINE,
        interval=0.2,
        message="foreign-slot ticket firing in Prometheus",
    )
    # It is a ticket: neither the page for foreign slots nor any PowerSync alert came with it.
    assert (
        alertmanager_alerts(stage.client, stage.alertmanager.url, "ForeignSlotFillingBudget") == []
    )
    stage.cluster.execute("SELECT pg_drop_replication_slot(%s)", (FOREIGN,))
    wait_until(
        lambda: not ticket_in_alertmanager(),
        ALERT_DEADLINE,
        interval=0.2,
        message="ticket resolved after the drop",
    )
    # Every notification vmalert sent, Alertmanager accepted.
    send_errors = [
        line
        for line in stage.client.get(stage.vmalert.url + "/metrics").text.splitlines()
        if line.startswith("vmalert_alerts_send_errors_total") and not line.endswith(" 0")
    ]
    assert send_errors == []

    # slotwatch itself goes away: the scrape fails, every slot series goes stale, and the page
    # that must come now is SlotwatchDown, for the instance that vanished.
    instance = stage.slotwatch.url.removeprefix("http://")
    assert stage.slotwatch.stop() == 0
    stopped_at = time.monotonic()

    def down_in_alertmanager() -> list[dict[str, Any]]:
        return [
            alert
            for alert in alertmanager_alerts(stage.client, stage.alertmanager.url, "SlotwatchDown")
            if alert["status"]["state"] == "active"
            and alert["labels"].get("instance") == instance
            and alert["labels"].get("severity") == "page"
        ]

    wait_until(down_in_alertmanager, ALERT_DEADLINE, interval=0.2, message="SlotwatchDown in AM")
    down_latency = time.monotonic() - stopped_at
    wait_until(
        lambda: stage.webhook.alerts("SlotwatchDown", "firing"),
        ALERT_DEADLINE,
        interval=0.2,
        message="SlotwatchDown delivered",
    )
    # A stale slot is no verdict: no slot alert may page because its series disappeared.
    slot_alerts = [
        a["labels"]["alertname"]
        for a in all_alerts(stage.client, stage.vmalert.url)
        if a["labels"]["alertname"] != "SlotwatchDown"
    ]
    assert slot_alerts == []

    total = time.monotonic() - stage.started
    print(
        f"\nmonitoring e2e: stage+dashboard {dashboard_done:.1f}s;"
        f" SIGSTOP -> vmalert firing {vmalert_latency:.1f}s,"
        f" -> Alertmanager {alertmanager_latency:.1f}s,"
        f" -> webhook {delivered_latency:.1f}s;"
        f" SIGCONT -> resolved delivered {resolved_latency:.1f}s;"
        f" foreign slot -> ticket delivered {foreign_latency:.1f}s;"
        f" slotwatch stopped -> SlotwatchDown in Alertmanager {down_latency:.1f}s;"
        f" total {total:.1f}s"
        f"\npaged: {annotations['summary']}: {annotations['description']}"
    )


def test_configs_derived_from_the_shipped_files_keep_their_contract() -> None:
    """The stage above runs the shipped jobs and routes; this pins what it relies on in them."""
    for shipped in (PROMETHEUS_JOB_FILE, VM_SCRAPE_FILE):
        job = slotwatch_job(shipped, "127.0.0.1:1")
        assert job["job_name"] == "slotwatch"
        assert job["metrics_path"] == "/metrics"
    config = alertmanager_config("http://127.0.0.1:1")
    pages = [r for r in config["route"]["routes"] if r["matchers"] == ['severity="page"']]
    assert [r["receiver"] for r in pages] == ["pager"]
