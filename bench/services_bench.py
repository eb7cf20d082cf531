"""Site services: start-to-ready time and memory per service, DNS queries per second
(dnsperf) and introspection requests per second one site serves (median of 3).

    python -m bench.services_bench
"""

from __future__ import annotations

import os
import signal
import statistics
import time

from bench.common import save, show, unique
from bench.lab_bench import _pss_kib, topology
from lab.host import labs, procs
from lab.host.procs import run_in
from lab.ops import lifecycle, tokenstore
from lab.render import credentials
from lab.shared.dnsid import ask_identity
from lab.shared.wait import wait_until

SITE, CLIENT = "ams", "c-eu"


def _tls_ready(netns: str, address: str) -> bool:
    import socket

    from lab.shared.nsnet import socket_in

    sock = socket_in(netns, socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(0.2)
    try:
        sock.connect((address, 443))
        return True
    except OSError:
        return False
    finally:
        sock.close()


def start_times(lab: labs.Lab, trials: int = 5) -> dict:
    """Kill a service and start it again; time until it answers (polled every 5 ms)."""
    site = lab.plan.nodes[SITE]
    unicast = str(site.interfaces[0].v4.ip)
    ready = {
        "unbound": lambda: ask_identity(site.netns, unicast, timeout=0.05).site == SITE,
        "introspect": lambda: _tls_ready(site.netns, unicast),
    }
    out = {}
    for daemon, is_ready in ready.items():
        times, pss = [], []
        for _ in range(trials):
            record = procs.running(lab.journal, f"{daemon}@{SITE}")
            assert record is not None
            os.kill(record.pid, signal.SIGKILL)
            wait_until(lambda pid=record.pid: procs.start_time(pid) is None, 10, 0.005)
            t0 = time.monotonic()
            new = procs.restart(lab.journal, f"{daemon}@{SITE}")
            wait_until(is_ready, 30, 0.005)
            times.append((time.monotonic() - t0) * 1000)
            time.sleep(0.5)
            pss.append(_pss_kib(new.pid) / 1024)
        out[daemon] = {"start_to_ready_ms_median": round(statistics.median(times), 1),
                       "start_to_ready_ms_max": round(max(times), 1),
                       "pss_mib": round(statistics.median(pss), 1)}
    return out


def dns_qps(lab: labs.Lab, runs: int = 3) -> dict:
    client = lab.plan.nodes[CLIENT]
    qfile = lab.journal.dir / "queries.txt"
    qfile.write_text("dns.anycast.lab A\nintrospect.anycast.lab A\nns.anycast.lab AAAA\n")
    results = []
    for _ in range(runs):
        out = run_in(client.netns, ["dnsperf", "-s", "203.0.113.53", "-d", str(qfile),
                                    "-l", "5", "-c", "8", "-q", "200", "-S", "0"],
                     timeout=30).stdout
        line = next(ln for ln in out.splitlines() if "Queries per second" in ln)
        results.append(float(line.split(":")[1]))
    return {"qps_runs": results, "qps_median": round(statistics.median(results))}


WRK_SCRIPT = """wrk.method = "POST"
wrk.body = "token={token}"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic {basic}"
"""


def introspect_rps(lab: labs.Lab, runs: int = 3) -> dict:
    """wrk (50 keep-alive connections, 5 s, bounded) from a client to the anycast address;
    every answer must be 200."""
    import base64

    token, _ = tokenstore.issue(lab.journal.dir, "lab-admin", "bench", 600)
    secret = credentials.client_secret(lab.journal.dir, "lab-admin")
    basic = base64.b64encode(f"lab-admin:{secret}".encode()).decode()
    script = lab.journal.dir / "bench-wrk.lua"
    script.write_text(WRK_SCRIPT.format(token=token, basic=basic))
    results = []
    for _ in range(runs):
        out = run_in(lab.plan.nodes[CLIENT].netns, [
            "wrk", "-t1", "-c50", "-d5s", "-s", str(script),
            "https://203.0.113.53/introspect"], timeout=30).stdout
        assert "Non-2xx" not in out and "Socket errors" not in out, out
        line = next(ln for ln in out.splitlines() if ln.startswith("Requests/sec:"))
        results.append(float(line.split(":")[1]))
    return {"rps_runs": results, "rps_median": round(statistics.median(results)),
            "client": "wrk -t1 -c50, keep-alive, from c-eu through r-eu to ams"}


def main() -> None:
    topo = topology("default", unique("bs"))
    lab = lifecycle.up(topo, lambda _m: None)
    try:
        starts = start_times(lab)
        dns = dns_qps(lab)
        rps = introspect_rps(lab)
    finally:
        lifecycle.teardown(lab.journal)
    show("site services", ["service", "start to ready ms (median)", "max", "PSS MiB"],
         [[k, v["start_to_ready_ms_median"], v["start_to_ready_ms_max"], v["pss_mib"]]
          for k, v in starts.items()])
    show("throughput of one site (from a client namespace, through the routers)",
         ["service", "median of 3", "runs"],
         [["DNS queries/s (dnsperf)", dns["qps_median"], dns["qps_runs"]],
          ["introspection requests/s", rps["rps_median"], rps["rps_runs"]]])
    save("services", {"start": starts, "dns": dns, "introspect": rps})


if __name__ == "__main__":
    main()
