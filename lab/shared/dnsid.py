"""Which site answered? Ask the DNS service its identity (id.server CH TXT) from a
client's namespace. The answer comes from the service itself, not from routing."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

import dns.exception
import dns.message
import dns.query
import dns.rdataclass
import dns.rdatatype

from lab.shared.nsnet import socket_in


@dataclass(frozen=True)
class Identity:
    site: str | None
    rtt_ms: float | None
    error: str | None = None


def identity_query() -> dns.message.QueryMessage:
    """The question every asker uses (status, catchment, the probes): id.server CH TXT."""
    return dns.message.make_query("id.server.", dns.rdatatype.TXT, dns.rdataclass.CH)


def site_from_response(response: dns.message.Message) -> str | None:
    """The site's name in an identity answer (its first TXT string), or None."""
    for rrset in response.answer:
        for rdata in rrset:
            return b"".join(rdata.strings).decode(errors="replace")
    return None


def ask_identity(netns: str, server: str, timeout: float = 0.5) -> Identity:
    """One CH TXT id.server query from inside `netns` to `server` (UDP, connected)."""
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    sock = socket_in(netns, family, socket.SOCK_DGRAM)
    try:
        # A connected socket learns "port unreachable" from ICMP at once (~20 ms, measured
        # with dig); an unconnected one ignores the error and waits for the whole timeout.
        sock.setblocking(False)  # dnspython requires a non-blocking socket
        sock.connect((server, 53))
        query = identity_query()
        started = time.monotonic()
        response = dns.query.udp(query, server, timeout=timeout, sock=sock)
        rtt = (time.monotonic() - started) * 1000
        return Identity(site_from_response(response), round(rtt, 3))
    except (dns.exception.Timeout, TimeoutError):
        return Identity(None, None, "timeout")
    except OSError as exc:
        return Identity(None, None, exc.strerror or str(exc))
    except dns.exception.DNSException as exc:
        return Identity(None, None, str(exc))
    finally:
        sock.close()
