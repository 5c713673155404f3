"""Measures how long a CLI suspension takes to end an open event stream on another node.

Run by bench/propagation/run, which starts the nodes. Standard library only; loopback only;
every wait is bounded.
"""

import argparse
import base64
import http.client
import json
import statistics
import subprocess
import threading
import time
import urllib.parse

VERSION = "2025-11-25"


def cli(args, bin_, config):
    out = subprocess.run([bin_, "-c", config, *args], capture_output=True, text=True, timeout=30, check=True)
    return out.stdout


def field(text, key):
    for line in text.splitlines():
        if line.startswith(key):
            return line[len(key):].strip()
    raise SystemExit(f"no {key} in: {text}")


def token(node_a, client_id, secret):
    conn = http.client.HTTPConnection(node_a, timeout=10)
    body = urllib.parse.urlencode(
        {"grant_type": "client_credentials", "resource": f"http://{node_a}/mcp/crm"}
    )
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    conn.request("POST", "/token", body, {
        "authorization": f"Basic {basic}",
        "content-type": "application/x-www-form-urlencoded",
    })
    answer = json.loads(conn.getresponse().read())
    return answer["access_token"]


def open_stream(node_b, node_a, access_token):
    """Initializes a session on node B and opens its GET stream; returns the response."""
    headers = {
        "authorization": f"Bearer {access_token}",
        "accept": "application/json, text/event-stream",
        "content-type": "application/json",
        "host": node_b,
    }
    conn = http.client.HTTPConnection(node_b, timeout=10)
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": VERSION, "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}}
    conn.request("POST", "/mcp/crm", json.dumps(init), headers)
    response = conn.getresponse()
    response.read()
    if response.status != 200:
        raise SystemExit(f"initialize answered {response.status}")
    session = response.getheader("mcp-session-id")
    headers.update({"mcp-session-id": session, "mcp-protocol-version": VERSION, "accept": "text/event-stream"})
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    conn.request("POST", "/mcp/crm", json.dumps(note), {**headers, "accept": "application/json, text/event-stream"})
    conn.getresponse().read()
    stream = http.client.HTTPConnection(node_b, timeout=10)
    stream.request("GET", "/mcp/crm", headers=headers)
    response = stream.getresponse()
    if response.status != 200:
        raise SystemExit(f"the GET stream answered {response.status}")
    return response


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--node-a", required=True)
    parser.add_argument("--node-b", required=True)
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    after_command, after_start = [], []
    for n in range(args.rounds):
        added = cli(["client", "add", "--name", f"bench {n}", "--confidential", "--scope", "crm.contacts.read"],
                    args.bin, args.config)
        client_id, secret = field(added, "client_id:"), field(added, "client_secret:")
        response = open_stream(args.node_b, args.node_a, token(args.node_a, client_id, secret))
        ended = {}

        def drain():
            try:
                while response.read(1):
                    pass
            except OSError:
                pass
            ended["at"] = time.monotonic()

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        time.sleep(0.05)
        if "at" in ended:
            raise SystemExit("the stream ended before the suspension")
        started = time.monotonic()
        cli(["client", "suspend", client_id], args.bin, args.config)
        returned = time.monotonic()
        reader.join(timeout=5)
        if "at" not in ended:
            raise SystemExit(f"round {n}: the stream was still open 5 s after the suspension")
        after_command.append(max(0.0, ended["at"] - returned) * 1000)
        after_start.append((ended["at"] - started) * 1000)
    for label, values in [("from the command's return", after_command),
                          ("from the command's start (CLI start-up included)", after_start)]:
        print(f"{label:50} min {min(values):6.1f}  p50 {statistics.median(values):6.1f}  "
              f"p90 {percentile(values, 90):6.1f}  p99 {percentile(values, 99):6.1f}  max {max(values):6.1f} ms")
    over = sum(1 for v in after_command if v > 1000)
    print(f"{len(after_command)} suspensions; {over} took longer than a second to reach node B")


if __name__ == "__main__":
    main()
