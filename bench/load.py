"""A bounded HTTP load generator for 127.0.0.1: a fixed number of POSTs over a fixed number of
keep-alive connections, then it stops and prints one JSON line (throughput, latency percentiles).

It runs in its own process, so the server under test never shares an interpreter with its client:

    python bench/load.py http://127.0.0.1:8000/v1/predict body.json --requests 2000 --concurrency 16

Each connection sends its next request as soon as the previous answer has been read (closed loop), so
``concurrency`` is the number of requests in flight. Any status other than 200 counts as an error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from urllib.parse import urlsplit


async def _connection(host: str, port: int, request: bytes, left: list[int], latencies: list[float],
                      errors: list[int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while left[0] > 0:
            left[0] -= 1
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if status != 200:
                errors[0] += 1
    finally:
        writer.close()


async def run(url: str, body: bytes, requests: int, concurrency: int) -> dict[str, float]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"url: {host!r} is not a loopback address (rule: this generator only loads 127.0.0.1)")
    request = (f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    left, latencies, errors = [requests], [], [0]
    started = time.perf_counter()
    await asyncio.gather(*(_connection(host, port, request, left, latencies, errors) for _ in range(concurrency)))
    wall = time.perf_counter() - started
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    return {"requests": len(latencies), "concurrency": concurrency, "errors": errors[0], "seconds": wall,
            "requests_per_s": len(latencies) / wall, "p50_ms": pct(0.50), "p99_ms": pct(0.99)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("url")
    p.add_argument("body", help="file with the JSON body every request sends")
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=1)
    a = p.parse_args(argv)
    with open(a.body, "rb") as f:
        body = f.read()
    json.loads(body)  # a clear error now rather than N failed requests
    print(json.dumps(asyncio.run(run(a.url, body, a.requests, a.concurrency))))


if __name__ == "__main__":
    sys.exit(main())
