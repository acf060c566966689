"""A crowd of scrapers in a process of its own: `python tests/http_crowd.py PORT COUNT SECONDS`.

COUNT threads GET /metrics back to back, each request on a fresh connection, for SECONDS; then
one JSON line: every latency in seconds and every failure. Kept out of the test process so that
the crowd's threads do not compete with the test's own measurements for one interpreter lock.
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time


def main(port: int, count: int, seconds: float) -> None:
    latencies: list[float] = []
    failures: list[str] = []
    deadline = time.monotonic() + seconds

    def scrape() -> None:
        while time.monotonic() < deadline:
            started = time.monotonic()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                connection.request("GET", "/metrics")
                response = connection.getresponse()
                body = response.read()
                if response.status != 200 or b"slotwatch_up" not in body:
                    failures.append(f"status {response.status}")
            except OSError as exc:
                failures.append(repr(exc))
            finally:
                connection.close()
            latencies.append(time.monotonic() - started)

    threads = [threading.Thread(target=scrape) for _ in range(count)]
    for thread in threads:
        thread.start()
    print("started", flush=True)
    for thread in threads:
        thread.join()
    print(json.dumps({"latencies": latencies, "failures": failures}), flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]))
