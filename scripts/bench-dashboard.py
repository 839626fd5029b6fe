#!/usr/bin/env python3
"""The dashboard's first view, measured in headless Chromium (BENCHMARKS.md).

    scripts/bench-dashboard.py BASE_URL [--seed N]

With --seed, first creates N orders through the API (8 client threads). Then opens the
dashboard four times in one browser (the first cold, the others with cached assets) and
prints, per run, the page's own clock (performance.now()) at the moment the orders table
has its rows and the charts are drawn, plus the navigation timings. Needs Debian's
chromium and chromium-driver (scripts/test.sh installs them).
"""
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import http.client

NAMES = ["Ada Lovelace", "Grace Hopper", "Alan Turing", "Edsger Dijkstra",
         "Barbara Liskov", "Donald Knuth", "Margaret Hamilton", "Ken Thompson"]


def seed(base, n, threads=8):
    url = urllib.parse.urlparse(base)

    def work(k):
        conn = http.client.HTTPConnection(url.hostname, url.port)
        for i in range(k, n, threads):
            body = {"customerName": f"{NAMES[i % len(NAMES)]} {i % 5000}",
                    "customerEmail": f"c{i % 5000}@example.com", "currency": "EUR",
                    "items": [{"productId": f"p-{i % 97}", "productName": f"Product {i % 97}",
                               "quantity": 1 + i % 5, "unitPrice": round(1 + (i % 1000) * 0.37, 2)}]}
            conn.request("POST", "/api/v1/orders/order", json.dumps(body),
                         {"content-type": "application/json"})
            answer = conn.getresponse()
            answer.read()
            if answer.status != 201:
                raise SystemExit(f"create answered {answer.status}")

    workers = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main():
    base = sys.argv[1].rstrip("/")
    if "--seed" in sys.argv:
        n = int(sys.argv[sys.argv.index("--seed") + 1])
        started = time.time()
        seed(base, n)
        print(f"seeded {n} orders in {time.time() - started:.0f} s")
    port = free_port()
    driver = subprocess.Popen(["chromedriver", f"--port={port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def call(method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                         data=data, headers={"content-type": "application/json"})
        return json.load(urllib.request.urlopen(request))["value"]

    for _ in range(100):
        try:
            call("GET", "/status")
            break
        except OSError:
            time.sleep(0.05)
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tempfile.mkdtemp()}", "--window-size=1280,800"]
    session = call("POST", "/session", {"capabilities": {"alwaysMatch": {
        "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args}}}})["sessionId"]
    script = ("return document.querySelectorAll('table tbody tr').length >= 1 && "
              "document.querySelectorAll('svg rect').length > 0 ? performance.now() : null")
    timings = ("const n = performance.getEntriesByType('navigation')[0];"
               "return {domContentLoaded: Math.round(n.domContentLoadedEventEnd),"
               " load: Math.round(n.loadEventEnd)}")
    try:
        for run in range(4):
            call("POST", f"/session/{session}/url", {"url": base + "/"})
            drawn = None
            for _ in range(1000):
                drawn = call("POST", f"/session/{session}/execute/sync", {"script": script, "args": []})
                if drawn is not None:
                    break
                time.sleep(0.005)
            nav = call("POST", f"/session/{session}/execute/sync", {"script": timings, "args": []})
            state = "cold" if run == 0 else "warm"
            shown = "not drawn" if drawn is None else f"{drawn:.0f} ms"
            print(f"run {run} ({state}): table and charts drawn at {shown}; "
                  f"DOMContentLoaded {nav['domContentLoaded']} ms, load {nav['load']} ms")
    finally:
        urllib.request.urlopen(urllib.request.Request(
            f"http://127.0.0.1:{port}/session/{session}", method="DELETE"))
        driver.kill()


if __name__ == "__main__":
    main()
