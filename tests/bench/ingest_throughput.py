"""Ingestion throughput of a live actuator daemon, per `engine.durability` mode.

Usage: ingest_throughput.py ACTUATOR_BIN [BATCHES] [PER_BATCH] [CLIENTS]

For each mode ("batch", then "checkpoint") it starts the daemon on a fresh data directory
(real SQLite file), starts one canary rollout, sends BATCHES batches of PER_BATCH outcomes
to POST /v1/observations from CLIENTS parallel keep-alive connections, and prints one line
per mode: batches/s, observations/s and the median and p95 batch latency. Only the standard
library is used. The numbers depend on the disk (each batch in "batch" mode is one fsync'd
SQLite transaction) and on the build (use a release build for absolute numbers).
"""

import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time


def start(binary, data_dir, mode):
    settings = os.path.join(data_dir, "settings.toml")
    with open(settings, "w") as f:
        f.write(f'[engine]\ndurability = "{mode}"\n[log]\nfilter = "warn"\n')
    p = subprocess.Popen(
        [binary, "serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir, "--config", settings],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "RUST_LOG": "warn"},
    )
    for line in p.stdout:
        if line.startswith("actuator listening on "):
            url = line.strip().removeprefix("actuator listening on http://")
            threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
            host, port = url.rsplit(":", 1)
            return p, host, int(port)
    raise RuntimeError("the daemon exited before listening")


def call(conn, method, path, body):
    conn.request(method, path, json.dumps(body), {"content-type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    return r.status, json.loads(data) if data else None


def run(binary, mode, batches, per_batch, clients):
    with tempfile.TemporaryDirectory() as d:
        p, host, port = start(binary, d, mode)
        try:
            c = http.client.HTTPConnection(host, port)
            call(c, "POST", "/v1/slots", {"name": "chat"})
            for model, act in (("a", True), ("b", False)):
                call(c, "POST", "/v1/slots/chat/versions", {"document": {"model": model}, "activate": act})
            s, v = call(c, "POST", "/v1/rollouts", {
                "slot": "chat", "candidate": {"version": 2}, "strategy": "canary",
                "canary": {"phases": [{"traffic_percent": 50, "min_samples": 10**9, "min_duration_secs": 0}]},
            })
            assert s == 201, v
            rid = v["id"]
            latencies = []
            lock = threading.Lock()
            counter = iter(range(batches))

            def client(k):
                conn = http.client.HTTPConnection(host, port)
                mine = []
                while True:
                    with lock:
                        b = next(counter, None)
                    if b is None:
                        break
                    items = [{"request_id": f"r{b}-{i}", "rollout_id": rid,
                              "arm": "canary" if i % 2 else "stable", "outcome": "ok",
                              "latency_ms": 100.0 + i % 50, "cost": 0.001}
                             for i in range(per_batch)]
                    t = time.perf_counter()
                    s, r = call(conn, "POST", "/v1/observations", items)
                    mine.append(time.perf_counter() - t)
                    assert s == 200 and r["accepted"] == per_batch, r
                with lock:
                    latencies.extend(mine)

            t0 = time.perf_counter()
            threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - t0
            latencies.sort()
            med = latencies[len(latencies) // 2] * 1000
            p95 = latencies[int(len(latencies) * 0.95)] * 1000
            print(f"durability={mode:<10} {batches} batches x {per_batch}, {clients} clients: "
                  f"{batches / elapsed:8.1f} batches/s {batches * per_batch / elapsed:10.0f} obs/s "
                  f"median {med:6.2f} ms p95 {p95:6.2f} ms")
        finally:
            p.kill()
            p.wait()


def main():
    binary = sys.argv[1]
    batches = int(sys.argv[2]) if len(sys.argv) > 2 else 500
    per_batch = int(sys.argv[3]) if len(sys.argv) > 3 else 200
    clients = int(sys.argv[4]) if len(sys.argv) > 4 else 4
    for mode in ("batch", "checkpoint"):
        run(binary, mode, batches, per_batch, clients)


if __name__ == "__main__":
    main()
