"""HTTPS introspection prober: POSTs a token to the introspection service and learns the
answering site from the `X-Anycast-Site` header. Run inside a client namespace.

    python -m probes.introspect --address 203.0.113.53 --ca CA.pem --client ID \\
        --secret-file FILE --token-file FILE --count 200 --concurrency 200 --json

Bounded: at most --count requests, stops after --deadline seconds. Prints a JSON
summary (and, with --lines, one JSON line per request).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

SERVICE_NAME = "introspect.anycast.lab"


def url_for(address: str, port: int = 443) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"https://{host}:{port}/introspect"


async def _one(client: httpx.AsyncClient, url: str, auth: tuple[str, str], token: str,
               sem: asyncio.Semaphore) -> dict[str, Any]:
    async with sem:
        started = time.monotonic()
        try:
            response = await client.post(url, data={"token": token}, auth=auth,
                                         extensions={"sni_hostname": SERVICE_NAME})
            body = response.json()
            return {"t": started, "ms": round((time.monotonic() - started) * 1000, 3),
                    "status": response.status_code, "site": response.headers.get(
                        "x-anycast-site"), "active": body.get("active")}
        except (httpx.HTTPError, ValueError, ssl.SSLError) as exc:
            return {"t": started, "ms": round((time.monotonic() - started) * 1000, 3),
                    "status": None, "site": None, "error": type(exc).__name__}


async def run(address: str, ca: Path, client_id: str, secret: str, token: str, count: int,
              concurrency: int, timeout: float, deadline: float) -> list[dict[str, Any]]:
    context = ssl.create_default_context(cafile=str(ca))
    # The certificate names the service and its addresses; we connect by address.
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(verify=context, timeout=timeout, limits=limits) as client:
        tasks = [asyncio.create_task(_one(client, url_for(address), (client_id, secret), token,
                                          sem)) for _ in range(count)]
        done, pending = await asyncio.wait(tasks, timeout=deadline)
        for task in pending:
            task.cancel()
        return [t.result() for t in done if not t.cancelled()]


def summarise(results: list[dict[str, Any]], count: int) -> dict[str, Any]:
    ok = [r for r in results if r["status"] == 200]
    latencies = sorted(r["ms"] for r in ok)
    return {
        "requested": count,
        "completed": len(results),
        "ok": len(ok),
        "errors": count - len(ok),
        "sites": dict(Counter(r["site"] for r in ok)),
        "active": dict(Counter(str(r.get("active")) for r in ok)),
        "latency_ms": {
            "median": statistics.median(latencies) if latencies else None,
            "p95": latencies[int(0.95 * (len(latencies) - 1))] if latencies else None,
            "max": latencies[-1] if latencies else None,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True)
    parser.add_argument("--ca", required=True, type=Path)
    parser.add_argument("--client", required=True)
    parser.add_argument("--secret-file", required=True, type=Path,
                        help="JSON {client: secret} or a file holding the secret")
    parser.add_argument("--token-file", required=True, type=Path)
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--deadline", type=float, default=60.0)
    parser.add_argument("--lines", action="store_true", help="also print every request")
    args = parser.parse_args()
    if not 1 <= args.count <= 100_000 or not 1 <= args.concurrency <= 1000:
        parser.error("--count must be 1..100000 and --concurrency 1..1000")
    raw = args.secret_file.read_text().strip()
    secret = json.loads(raw)[args.client] if raw.startswith("{") else raw
    token = args.token_file.read_text().strip()
    started = time.monotonic()
    results = asyncio.run(run(args.address, args.ca, args.client, secret, token, args.count,
                              args.concurrency, args.timeout, args.deadline))
    summary = summarise(results, args.count)
    summary["elapsed_s"] = round(time.monotonic() - started, 3)
    summary["per_second"] = round(len(results) / summary["elapsed_s"], 1)
    if args.lines:
        for r in results:
            sys.stdout.write(json.dumps(r) + "\n")
    sys.stdout.write(json.dumps(summary) + "\n")


if __name__ == "__main__":
    main()
