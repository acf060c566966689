"""A name server that never answers costs a poll its connect timeout and a probe its timeout,
never the resolver's own minutes (docs/reliability.md, "Host names").

Each test runs the real `slotwatch` in namespaces of its own where the only name server is
silent (`sandbox.name_service`): glibc's resolver, set to `timeout:30 attempts:5`, would ask for
two and a half minutes. Each also checks that the server was really asked, so no answer can come
from /etc/hosts or a cache.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

from slotwatch_proc import SLOTWATCH, clean_env

from sandbox.name_service import RESOLV_CONF, silent_name_service

DB_HOST = "db.slotwatch.test"
PROBE_HOST = "powersync.slotwatch.test"
CANARY = "canary-5f3e"
# The resolver's own wait for one silent name: timeout x attempts (A and AAAA go in parallel).
RESOLVER_WAIT = 30 * 5
# Start-up and the verb's own work on a loaded 2-core machine, beside the timeouts.
SLACK = 6.0


def test_the_resolver_here_would_wait_its_minutes(tmp_path: Path) -> None:
    # What the other tests bound: without a deadline of its own, a lookup waits for the
    # resolver, as psycopg and httpcore did. Checked on the namespace itself, for 3 s.
    assert "timeout:30 attempts:5" in RESOLV_CONF
    probe = textwrap.dedent(
        f"""
        import socket, threading, time
        began = time.monotonic()
        threading.Thread(target=socket.getaddrinfo, args=("{DB_HOST}", 5432), daemon=True).start()
        time.sleep(3)
        print("still waiting" if time.monotonic() - began >= 3 else "answered")
        """
    )
    seen = silent_name_service([sys.executable, "-c", probe], clean_env({}), tmp_path)
    assert seen.stdout.strip() == "still waiting"
    assert DB_HOST in seen.asked


def test_status_ends_at_its_timeouts_with_one_line_naming_the_silent_lookup(
    tmp_path: Path,
) -> None:
    env = clean_env(
        {
            "SLOTWATCH_DSN": f"host={DB_HOST} dbname=app user=slotwatch password={CANARY}",
            "SLOTWATCH_LIVENESS_URL": f"http://probe:{CANARY}@{PROBE_HOST}:8080/probes/liveness",
            "SLOTWATCH_CONNECT_TIMEOUT": "2s",
            "SLOTWATCH_PROBE_TIMEOUT": "2s",
        }
    )
    seen = silent_name_service([SLOTWATCH, "status"], env, tmp_path)
    print(f"status with a silent name server: exit {seen.returncode} after {seen.elapsed:.2f}s")
    assert {DB_HOST, PROBE_HOST} <= set(seen.asked), seen.asked
    assert seen.returncode == 69, seen.stdout + seen.stderr
    assert seen.elapsed < 2 + 2 + SLACK < RESOLVER_WAIT
    said = f'could not translate host name "{DB_HOST}" to address: no answer from the name'
    assert seen.stderr.count("\n") == 1, seen.stderr
    assert seen.stderr.startswith(f"slotwatch: default: {said} service within 2s (")
    assert "/etc/resolv.conf do not answer" in seen.stderr  # the hint: what to fix
    assert f"  default: timeout: {said} service within 2s" in seen.stdout
    probe = f'down (could not translate host name "{PROBE_HOST}" to address: no answer'
    assert f"{probe} from the name service within 2s)" in seen.stdout
    assert CANARY not in seen.stdout + seen.stderr
    assert "Traceback" not in seen.stdout + seen.stderr


def test_a_host_named_by_a_service_file_is_looked_up_within_the_timeout_too(
    tmp_path: Path,
) -> None:
    # `service=` (pg_service.conf): libpq would look the entry's host up itself, unbounded.
    services = tmp_path / "pg_service.conf"
    services.write_text(f"[app]\nhost={DB_HOST}\ndbname=app\nuser=slotwatch\n")
    env = clean_env(
        {
            "SLOTWATCH_DSN": "service=app",
            "PGSERVICEFILE": str(services),
            "SLOTWATCH_LIVENESS_URL": "",
            "SLOTWATCH_CONNECT_TIMEOUT": "2s",
        }
    )
    seen = silent_name_service([SLOTWATCH, "status"], env, tmp_path)
    print(f"status, host from a service file: exit {seen.returncode} after {seen.elapsed:.2f}s")
    assert DB_HOST in seen.asked
    assert seen.returncode == 69, seen.stdout + seen.stderr
    assert seen.elapsed < 2 + SLACK
    said = f'could not translate host name "{DB_HOST}" to address: no answer from the name'
    assert seen.stderr.startswith(f"slotwatch: default: {said} service within 2s ("), seen.stderr
    assert "Traceback" not in seen.stdout + seen.stderr


def test_a_silent_first_host_costs_one_timeout_and_the_next_host_is_tried(
    tmp_path: Path,
) -> None:
    # libpq's multi-host DSN: a name that cannot be looked up is left out while another host
    # remains, as psycopg does; here the next host is an address, refused at once (nothing
    # listens in the namespace), and that refusal is what the verb says.
    env = clean_env(
        {
            "SLOTWATCH_DSN": f"host={DB_HOST},127.0.0.1 port=5432 dbname=app user=slotwatch",
            "SLOTWATCH_LIVENESS_URL": "",
            "SLOTWATCH_CONNECT_TIMEOUT": "2s",
        }
    )
    seen = silent_name_service([SLOTWATCH, "check"], env, tmp_path)
    print(f"check, silent first host: exit {seen.returncode} after {seen.elapsed:.2f}s")
    assert DB_HOST in seen.asked
    assert seen.returncode == 3, seen.stdout + seen.stderr  # UNKNOWN: the database unreachable
    assert seen.elapsed < 2 + SLACK
    [line] = seen.stdout.splitlines()
    assert line.startswith("SLOTWATCH UNKNOWN - default: database unreachable ("), line
    assert '"127.0.0.1", port 5432 failed: Connection refused' in line
    assert seen.stderr == ""


def test_a_silent_name_holds_one_lookup_however_many_polls_ask(tmp_path: Path) -> None:
    # The daemon's polls of one name, every interval: a lookup still in flight is waited on, not
    # started again, so a silent name server holds one thread per name, never one per poll.
    script = textwrap.dedent(
        f"""
        import json, threading
        from slotwatch.poll import names
        outcomes = []
        for _ in range(8):
            try:
                names.resolve("{DB_HOST}", 0.25)
            except names.Unresolved as exc:
                outcomes.append([str(exc), exc.timed_out])
        lookups = [t.name for t in threading.enumerate() if t.name.startswith("resolve ")]
        print(json.dumps({{"outcomes": outcomes, "lookups": lookups}}))
        """
    )
    seen = silent_name_service([sys.executable, "-c", script], clean_env({}), tmp_path)
    said = json.loads(seen.stdout)
    no_answer = f'could not translate host name "{DB_HOST}" to address: no answer from the name'
    assert said["outcomes"] == [[f"{no_answer} service within 0.25s", True]] * 8
    assert said["lookups"] == [f"resolve {DB_HOST}"]
    # One lookup asked: an A and an AAAA query at most; the resolver's own retry would come
    # after its 30 s timeout, well past these 2 s. Eight lookups would have asked 16 times.
    assert set(seen.asked) == {DB_HOST}, seen.asked
    assert len(seen.asked) <= 2, seen.asked
