#!/usr/bin/env python3
"""Benchmark: a download through the allowlist proxy against the same download without it.

    python tools/bench_proxy.py [--mb 100] [--runs 3] [--json]

A local origin sends `--mb` MiB from the page cache with sendfile (so the origin is never the bottleneck);
curl fetches it directly, through the proxy as plain HTTP (absolute URI, parsed and re-framed by h11), and
through a CONNECT tunnel (the blind relay that carries TLS). The proxy runs in this process's event loop on a
loopback listener, as the server runs it on a session's socket. Prints the median throughput of each and its
ratio to the direct download. Not a test: it never fails on timing, it reports.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from anyio.from_thread import start_blocking_portal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hanzo_sandbox_mcp.netproxy.decisions import DecisionLog
from hanzo_sandbox_mcp.netproxy.proxy import serve
from hanzo_sandbox_mcp.policy import SandboxPolicy


class _Origin:
    """Answers every connection with one HTTP response: the whole file, sent with sendfile."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = path.stat().st_size
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn, self.path.open("rb") as body:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                head += chunk
            conn.sendall(f"HTTP/1.1 200 OK\r\ncontent-length: {self.size}\r\nconnection: close\r\n\r\n".encode())
            conn.sendfile(body)


def _curl_mib_s(url: str, size: int, extra: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        ["curl", "-sS", "--noproxy", "", "-o", "/dev/null", "-w", "%{size_download}", *extra, url],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    elapsed = time.perf_counter() - start
    if int(done.stdout) != size:
        raise SystemExit(f"curl got {done.stdout} bytes of {size} from {url}")
    return size / elapsed / (1 << 20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100, help="download size in MiB")
    parser.add_argument("--runs", type=int, default=3, help="downloads per path (median reported)")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="hanzo-bench-proxy-") as tmp:
        path = Path(tmp) / "payload"
        with path.open("wb") as handle:
            block = os.urandom(1 << 20)
            for _ in range(args.mb):
                handle.write(block)
        origin = _Origin(path)
        policy = SandboxPolicy.model_validate(
            {
                "network": "allowlist",
                "allowed_domains": ["origin.bench"],
                "allowed_ports": [origin.port],
                "allowed_private_cidrs": ["127.0.0.0/8"],
                "proxy_hosts": {"origin.bench": "127.0.0.1"},
            }
        )
        listener = socket.create_server(("127.0.0.1", 0))
        proxy = f"http://127.0.0.1:{listener.getsockname()[1]}"
        url = f"http://origin.bench:{origin.port}/payload"
        paths = {
            "direct": (f"http://127.0.0.1:{origin.port}/payload", []),
            "proxy, plain HTTP": (url, ["-x", proxy]),
            "proxy, CONNECT tunnel": (url, ["-x", proxy, "--proxytunnel"]),
        }
        results: dict[str, float] = {}
        with start_blocking_portal() as portal:
            serving = portal.start_task_soon(
                lambda: serve(listener, policy, session_tag="bench", decisions=DecisionLog())
            )
            try:
                for name, (target, extra) in paths.items():
                    _curl_mib_s(target, origin.size, extra)  # warm-up
                    runs = [_curl_mib_s(target, origin.size, extra) for _ in range(args.runs)]
                    results[name] = statistics.median(runs)
            finally:
                serving.cancel()
        origin.sock.close()

    direct = results["direct"]
    if args.json:
        report = {
            name: {"mib_per_s": round(v, 1), "ratio_to_direct": round(v / direct, 3)} for name, v in results.items()
        }
        print(json.dumps({"mib": args.mb, "runs": args.runs, "results": report}, indent=2))
        return
    print(f"{args.mb} MiB download from a local origin, median of {args.runs}:")
    for name, value in results.items():
        print(f"  {name:<24} {value:8.1f} MiB/s   {value / direct:5.2f}x direct")


if __name__ == "__main__":
    main()
