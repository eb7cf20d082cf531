"""The identity check: is the identity state this site serves as good as the issuer's?

`decide` is the rule (pure): the site's served key set must equal the issuer's (as last
received), and its revocation state must be younger than `max_staleness`. A site whose
state is older is cut off from the issuer; whether it withdraws depends on whether it is
alone in that:

* some other site is fresh: the issuer is reachable, this site is partitioned from it ->
  withdraw (its clients move to a site that knows every revocation);
* no site is fresh (the issuer is unreachable from every site): the topology's policy --
  `fail-closed` withdraws (every site does: a total outage, no revoked token accepted),
  `serve-stale` keeps serving until the state is `serve_stale_max` old.

`IdentityProbe` gathers the inputs: the site's own `/identity` from the service's health
listener, and -- only when it is stale under serve-stale -- the other sites' over their
unicast addresses.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from typing import Any

from lab.shared import https
from lab.sites.health.checks import CheckFailed, KeptConnection, Probe
from lab.sites.health.config import IdentityCheck


def _age(state: dict[str, Any] | None) -> float | None:
    """The age in seconds of a site's revocation state, None when unknown."""
    if not isinstance(state, dict):
        return None
    rev = state.get("revocation")
    if not isinstance(rev, dict) or not rev.get("ever_synced", True):
        return None
    age = rev.get("age_s")
    return float(age) if isinstance(age, int | float) and not isinstance(age, bool) else None


def fresh(state: dict[str, Any] | None, max_staleness_s: float) -> bool:
    age = _age(state)
    return age is not None and age <= max_staleness_s


def reached_issuer_since(peer: dict[str, Any] | None, own: dict[str, Any],
                         max_staleness_s: float) -> bool:
    """Does a peer's state show the issuer reachable after `own` last reached it? A fresh
    peer does -- unless `own` did sync and the peer's last sync is no more than 1.5 sync
    intervals later than its own: when the issuer goes down, the sites' last syncs lie
    within one interval of each other, and the first to turn stale still sees the others
    fresh for up to an interval. Without that margin it would count itself cut off and
    withdraw, alone, for a moment."""
    if not fresh(peer, max_staleness_s):
        return False
    own_age, peer_age = _age(own), _age(peer)
    sync = own.get("sync")
    interval = sync.get("interval_s") if isinstance(sync, dict) else None
    if own_age is None or peer_age is None or not isinstance(interval, int | float):
        return True  # never synced, or no interval said: any fresh peer counts
    return own_age - peer_age > PEER_LAG_INTERVALS * interval


def stale_in_s(state: dict[str, Any] | None, max_staleness_s: float) -> float | None:
    """When to look again at a fresh state: just after the moment it turns stale unless a
    sync comes first (a partitioned site is seen stale as soon as it is, whatever the
    check's interval); None when it is not fresh (the interval, or the fast pace, rules)."""
    age = _age(state)
    if age is None or age > max_staleness_s:
        return None
    return max_staleness_s - age + RECHECK_MARGIN_S


def decide(own: dict[str, Any], peers: list[dict[str, Any] | None] | None, *,
           max_staleness_s: float, policy: str, serve_stale_max_s: float) -> tuple[bool, str]:
    """(up, reason) for a site's identity state `own` (its `/identity` document) and what
    the other sites said (`peers`: None when not asked; an entry None: no answer)."""
    if not own.get("replicated"):
        return False, "the service does not replicate from an issuer"
    kids, issuer_kids = set(own.get("kids") or ()), set(own.get("issuer_kids") or ())
    if not kids:
        return False, "no signing keys"
    if kids != issuer_kids:
        extra = ", ".join(sorted(kids - issuer_kids)) or "-"
        return False, f"key set differs from the issuer's (not the issuer's: {extra})"
    rev = own.get("revocation") or {}
    age = rev.get("age_s")
    if not isinstance(age, int | float):
        return False, "no revocation age"
    if rev.get("ever_synced") and age <= max_staleness_s:
        return True, "ok"
    stale = (f"revocation state {age:.1f} s old (> {max_staleness_s:g} s)"
             if rev.get("ever_synced") else f"never synced ({age:.1f} s since start)")
    if policy != "serve-stale":
        return False, stale
    if peers is None:
        return False, stale + "; other sites not asked"
    fresh_peers = sum(reached_issuer_since(p, own, max_staleness_s) for p in peers)
    if fresh_peers:
        return False, f"{stale}; {fresh_peers} other site(s) fresh: cut off from the issuer"
    if age <= serve_stale_max_s:
        return True, (f"{stale}, but the issuer is unreachable from every site: serving "
                      f"stale (bound {serve_stale_max_s:g} s)")
    return False, f"{stale}: past the serve-stale bound of {serve_stale_max_s:g} s"


RECHECK_MARGIN_S = 0.02  # after the moment the state seen would turn stale
PEER_LAG_INTERVALS = 1.5  # see reached_issuer_since


class IdentityProbe(Probe):
    def __init__(self, cfg: IdentityCheck) -> None:
        self.cfg = cfg
        self.context: ssl.SSLContext | None = None
        self.client: KeptConnection | None = None  # to the site's own service, kept open

    def _own(self, timeout_s: float) -> dict[str, Any]:
        if self.client is None:
            self.client = KeptConnection(self.cfg.address, self.cfg.port, self.cfg.server_name,
                                         self.cfg.ca_file)
        try:
            answer = self.client.request("GET", "/identity", None, {}, timeout_s)
            body = answer.json()
        except TimeoutError:
            raise TimeoutError("timeout (/identity call)") from None
        except (OSError, http.client.HTTPException, ValueError, CheckFailed) as exc:
            raise ValueError(str(exc) or type(exc).__name__) from None
        # On the health listener the service says whether it is saturated (as for the
        # introspection check: under `absorb` a timeout then gives no verdict).
        flag = answer.headers.get("x-anycast-saturated")
        self.saturated = None if flag is None else flag == "1"
        if answer.status_code != 200 or not isinstance(body, dict):
            raise ValueError(f"/identity answered {answer.status_code}")
        return body

    def close(self) -> None:
        if self.client is not None:
            self.client.close()

    def kept_socket(self) -> socket.socket | None:
        return None if self.client is None else self.client.socket()

    def _get(self, address: str, port: int, timeout_s: float) -> dict[str, Any] | None:
        if self.context is None:
            self.context = ssl.create_default_context(cafile=str(self.cfg.ca_file))
        answer = https.request(address, port, "GET", "/identity", ca_file=self.cfg.ca_file,
                               server_name=self.cfg.server_name, timeout_s=timeout_s,
                               context=self.context)
        if answer.status != 200 or not isinstance(answer.body, dict):
            raise ValueError(f"/identity answered {answer.status}")
        return answer.body

    def attempt(self, started: float) -> tuple[bool, str]:
        deadline = started + self.cfg.timeout_ms / 1000
        self.saturated = None
        try:
            own = self._own(self.cfg.timeout_ms / 1000)
        except TimeoutError as exc:
            return False, str(exc)
        except (OSError, ValueError, ssl.SSLError) as exc:
            return False, f"/identity: {exc}"[:200]
        assert own is not None
        max_s = self.cfg.max_staleness_ms / 1000
        self.recheck_s = stale_in_s(own, max_s)
        peers: list[dict[str, Any] | None] | None = None
        if self.cfg.policy == "serve-stale" and not fresh(own, max_s) and self.cfg.peers:
            peers = []
            for peer in self.cfg.peers:
                left = deadline - time.monotonic()
                if left <= 0.01:
                    peers.append(None)
                    continue
                try:
                    peers.append(self._get(peer, self.cfg.peer_port,
                                           min(left, left / max(len(self.cfg.peers), 1) * 2)))
                except (OSError, ValueError, ssl.SSLError):
                    peers.append(None)
        return decide(own, peers, max_staleness_s=max_s, policy=self.cfg.policy,
                      serve_stale_max_s=self.cfg.serve_stale_max_ms / 1000)
