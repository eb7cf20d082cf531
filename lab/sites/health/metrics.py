"""Prometheus metrics of the health daemon, in a registry of its own.

    anycast_health_check_state{check, anycast_health_check_state=unknown|up|down}  1/0
    anycast_health_check_results_total{check, result=ok|fail}
    anycast_health_check_transitions_total{check, to}
    anycast_health_check_flaps_total{check}            up<->down changes
    anycast_health_check_latency_seconds{check}        histogram
    anycast_health_site_healthy                        1/0
    anycast_health_site_flaps_total
    anycast_health_drained                             1/0
    anycast_health_saturated                           1 if the service says it is saturated
    anycast_health_announced                           1 if announced (gshut included)
    anycast_health_route{anycast_health_route=withdrawn|announced|gshut|unknown}
    anycast_health_shim_connected                      1/0
    anycast_health_shim_commands_total{command, result=ok|fail}
plus the process collector (CPU seconds, RSS) of the daemon itself.

`serve()` binds in the calling process's network namespace: the daemon runs inside the
site's namespace, so the metrics listen on the site's own address there.
"""

from __future__ import annotations

import os
import selectors
import socket
import threading
from socketserver import TCPServer, ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Enum,
    Gauge,
    Histogram,
    ProcessCollector,
    make_wsgi_app,
)

from lab.sites.health.state import DOWN, UNKNOWN, UP

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0)
ROUTES = ["withdrawn", "announced", "gshut", "unknown"]


class Metrics:
    def __init__(self, checks: list[str]) -> None:
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)
        p = "anycast_health_"
        self.check_state = Enum(p + "check_state", "State of each check", ["check"],
                                states=[UNKNOWN, UP, DOWN], registry=r)
        self.results = Counter(p + "check_results", "Check results", ["check", "result"],
                               registry=r)
        self.transitions = Counter(p + "check_transitions", "Check state changes",
                                   ["check", "to"], registry=r)
        self.check_flaps = Counter(p + "check_flaps", "Check up<->down changes", ["check"],
                                   registry=r)
        self.latency = Histogram(p + "check_latency_seconds", "Time a check took", ["check"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.healthy = Gauge(p + "site_healthy", "1 if every required check is up",
                             registry=r)
        self.site_flaps = Counter(p + "site_flaps", "Site health up<->down changes",
                                  registry=r)
        self.drained = Gauge(p + "drained", "1 if the drain file is present", registry=r)
        self.saturated = Gauge(p + "saturated", "1 if the service says it is saturated",
                               registry=r)
        self.announced = Gauge(p + "announced", "1 if the route is announced", registry=r)
        self.route = Enum(p + "route", "What the speaker has", states=ROUTES, registry=r)
        self.shim_connected = Gauge(p + "shim_connected", "1 if connected to the shim",
                                    registry=r)
        self.commands = Counter(p + "shim_commands", "Commands sent to the shim",
                                ["command", "result"], registry=r)
        self.last_site_kept = Counter(
            p + "last_site_kept", "Times the site stayed (or went back) announced as the "
            "last site standing (health.last_site keep-last)", registry=r)
        self.last_site = Gauge(p + "last_site", "1 while announced only because no other "
                               "site's route is seen (keep-last)", registry=r)
        self.route.state("withdrawn")
        for name in checks:
            self.check_state.labels(name).state(UNKNOWN)
            for result in ("ok", "fail"):
                self.results.labels(name, result)
            self.check_flaps.labels(name)
            self.latency.labels(name)

    def set_route(self, route: str) -> None:
        self.route.state(route)
        self.announced.set(1 if route in ("announced", "gshut") else 0)

    def serve(self, address: str, port: int) -> WSGIServer:
        """Serve /metrics on address:port in a daemon thread. Not prometheus_client's
        start_http_server: http.server's bind asks a resolver for the address's name
        (socket.getfqdn), which from inside a lab namespace stalled start-up for 5 s
        and sent a lookup towards a resolver outside the lab."""
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        server_class = type("MetricsServer", (_NoLookupWSGIServer,),
                            {"address_family": family})
        server = make_server(address, port, make_wsgi_app(self.registry),
                             server_class=server_class, handler_class=_QuietHandler)
        threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
        return server


class _NoLookupWSGIServer(ThreadingMixIn, WSGIServer):
    """No reverse lookup at bind; and a serving loop that sleeps until a scrape or
    `shutdown()` (socketserver's wakes every poll_interval, 0.5 s, to see a shutdown)."""

    daemon_threads = True
    allow_reuse_address = True

    def server_activate(self) -> None:
        super().server_activate()
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC)
        self._stopped = threading.Event()

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self, selectors.EVENT_READ)
                selector.register(self._stop_r, selectors.EVENT_READ)
                while True:
                    ready = {key.fileobj for key, _ in selector.select()}
                    if self._stop_r in ready:
                        return
                    if self in ready:
                        self._handle_request_noblock()
        finally:
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop serve_forever (from another thread) and wait until it has returned."""
        os.write(self._stop_w, b"x")
        self._stopped.wait()

    def server_close(self) -> None:
        super().server_close()
        for name in ("_stop_r", "_stop_w"):  # never made if the bind failed
            fd = getattr(self, name, -1)
            setattr(self, name, -1)
            if fd >= 0:
                os.close(fd)

    def server_bind(self) -> None:
        """TCPServer's bind only: no reverse lookup of our own address."""
        TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)
        self.setup_environ()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """No access log line per scrape."""
