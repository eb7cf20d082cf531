"""A scenario's background probes: one per client and per kind the scenario asks for
(`probe.kinds`): DNS (probes.dns), HTTPS on a new TLS connection per request
(probes.https, as the lab's own client lab-admin) and long-lived TCP streams
(probes.tcp_stream). All ask the IPv4 anycast address from the client's namespace, are
bounded by the run's own bound, and are started and stopped together; TCP connections
only from `probe.tcp_clients` when given."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lab.host.labs import Lab
from lab.measure.trials import Probe as AnyProbe
from lab.scenario import model as m

HTTPS_CLIENT = "lab-admin"  # the lab's own client registration (credentials.create)


@dataclass
class Probes:
    """kind -> client -> probe (not started yet), and the rate each kind sends at."""

    by_kind: dict[str, dict[str, Any]] = field(default_factory=dict)
    rates: dict[str, float] = field(default_factory=dict)

    def all(self) -> list[AnyProbe]:
        return [p for probes in self.by_kind.values() for p in probes.values()]

    def samples(self) -> dict[str, dict[str, list[Any]]]:
        return {kind: {c: p.samples for c, p in probes.items()}
                for kind, probes in self.by_kind.items()}

    def breaks(self) -> dict[str, list[Any]]:
        """The TCP probe's broken connections per client (live lists)."""
        return {c: p.breaks for c, p in self.by_kind.get("tcp", {}).items()}

    def counts(self) -> dict[str, dict[str, int]]:
        return {kind: {c: len(p.samples) for c, p in probes.items()}
                for kind, probes in self.by_kind.items()}


def make_probes(lab: Lab, spec: m.Probe, bound_s: float) -> Probes:
    assert lab.plan is not None
    server = str(lab.plan.anycast4.network_address)
    clients = lab.plan.by_role("client")
    out = Probes()
    for kind in spec.kinds:
        if kind == "dns":
            from probes.dns import BackgroundProbe

            out.rates[kind] = spec.rate_hz
            out.by_kind[kind] = {c.name: BackgroundProbe(server, spec.rate_hz, bound_s,
                                                         spec.timeout_ms / 1000, c.netns)
                                 for c in clients}
        elif kind == "https":
            from lab.render import credentials
            from probes.https import HttpsProbe, HttpsTarget

            target = HttpsTarget(server, credentials.paths(lab.journal.dir).ca_cert,
                                 HTTPS_CLIENT,
                                 credentials.client_secret(lab.journal.dir, HTTPS_CLIENT))
            out.rates[kind] = spec.https_rate_hz
            out.by_kind[kind] = {c.name: HttpsProbe(target, spec.https_rate_hz, bound_s,
                                                    spec.https_timeout_ms / 1000, c.netns)
                                 for c in clients}
        else:
            from probes.tcp_stream import TcpStreamProbe

            out.rates[kind] = spec.tcp_rate_hz
            chosen = set(spec.tcp_clients or [c.name for c in clients])
            out.by_kind[kind] = {c.name: TcpStreamProbe(server, spec.tcp_rate_hz, bound_s,
                                                        spec.tcp_timeout_ms / 1000, c.netns,
                                                        spec.tcp_connections)
                                 for c in clients if c.name in chosen}
    return out
