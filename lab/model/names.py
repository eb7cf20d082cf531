"""Every name the lab gives to something on this machine, in one place: network namespaces,
the files of a lab's run directory and of each node's directory (configs, control sockets,
logs, state), the names of BIRD's protocols, and the DNS name the health checks ask.

Pure: names and paths only, nothing is created or read here. Whoever builds a thing and
whoever later looks for it ask this module, so the two can never disagree. The programs
that run inside a site (`lab/sites/`) do not import it: they are given their paths in
their config and on their command line.
"""

from __future__ import annotations

import re
from pathlib import Path

# --- lab names ------------------------------------------------------------------------

LAB_NAME_RE = re.compile(r"[a-z][a-z0-9-]{0,23}")


def valid_lab_name(name: object) -> bool:
    """The lab-name rule, matched in full: lowercase letters, digits and '-', starting
    with a letter, at most 24 characters (no dot, no '/', no newline)."""
    return isinstance(name, str) and LAB_NAME_RE.fullmatch(name) is not None


# --- network namespaces: acl.<lab>.<node> ---------------------------------------------

NETNS_PREFIX = "acl"


def netns_name(lab: str, node: str) -> str:
    """The namespace of a node: `acl.<lab>.<node>` (dots never occur in lab or node names)."""
    return f"{NETNS_PREFIX}.{lab}.{node}"


def lab_netns_prefix(lab: str) -> str:
    """What every namespace of the lab starts with: `acl.<lab>.`."""
    return f"{NETNS_PREFIX}.{lab}."


def lab_of_netns(name: str) -> str | None:
    """The lab a namespace name says it belongs to (`acl.<lab>.<node>` -> `<lab>`), None for
    a name of another form. The lab part is not checked against the lab-name rule here."""
    prefix, _, rest = name.partition(".")
    lab, dot, _node = rest.partition(".")
    return lab if prefix == NETNS_PREFIX and dot and lab else None


# --- a lab's run directory: <run root>/<lab>/ -------------------------------------------

JOURNAL = "journal.jsonl"        # what the lab owns, written before it is created
STATE = "state.json"             # the lab's phase ("building", "up", "tearing-down")
TOPOLOGY_COPY = "topology.yaml"  # the effective topology, as `up` built it
FAULTS = "faults.json"           # the faults in force, so `heal` knows what to undo
IMPAIRMENTS = "impairments.json" # run-time impairments (`anycast-lab impair`), by link
PKI = "pki"                      # the lab's trust material (lab.render.credentials)
NODES = "nodes"                  # one directory per node, below


def node_dir(lab_dir: Path, node: str) -> Path:
    """Where a node's configs, sockets, logs and state files live."""
    return lab_dir / NODES / node


# --- a node's directory: <lab dir>/nodes/<node>/ ----------------------------------------

# Routers (BIRD).
BIRD_CONF = "bird.conf"
BIRD_CTL = "bird.ctl"            # BIRD's control socket
BIRD_PID = "bird.pid"

# Sites: Unbound, the introspection service, ExaBGP and its API process, the health daemon.
UNBOUND_CONF = "unbound.conf"
UNBOUND_PID = "unbound.pid"
INTROSPECT_CONF = "introspect.json"
REVOCATION = "revoked.json"      # the site's own revocation list
EXABGP_CONF = "exabgp.conf"
HEALTHCHECK_CONF = "healthcheck.conf"  # ExaBGP's bundled healthcheck (the anchor)
SPEAKER_SOCK = "speaker.sock"    # the speaker API process's control socket (healthd's)
HEALTHD_CONF = "healthd.json"
HEALTH_STATE = "health-state.json"
HEALTH_EVENTS = "health-events.jsonl"
DRAIN = "drain"                  # present while the site is drained
JWKS = "jwks.json"               # a site's replica of the issuer's keys (the seed at `up`)
JWKS_OVERRIDE = "jwks-override.json"  # present: the keys a site serves instead (wrong-key)

# The issuer: its config, its authoritative revocation list (REVOCATION) and what it issued.
ISSUER_CONF = "issuer.json"
ISSUED_TOKENS = "tokens.jsonl"

# The site's BFD responder: a second BIRD with only `protocol bfd` (bgp.bfd).
BFD_CONF = "bfd.conf"
BFD_CTL = "bfd.ctl"              # the responder's BIRD control socket
BFD_PID = "bfd.pid"
BFD_DAEMON = "bfdd"              # its process is `bfdd@<site>` in the journal


def log_name(daemon: str) -> str:
    """A daemon's log file in its node's directory: `bird` -> `bird.log` (`*` for a glob)."""
    return f"{daemon}.log"


def bird_socket(lab_dir: Path, router: str) -> Path:
    """A router's BIRD control socket."""
    return node_dir(lab_dir, router) / BIRD_CTL


def bfd_socket(lab_dir: Path, site: str) -> Path:
    """A site's BFD responder's control socket."""
    return node_dir(lab_dir, site) / BFD_CTL


def speaker_socket(lab_dir: Path, site: str) -> Path:
    """A site's speaker control socket (the health daemon's way to announce)."""
    return node_dir(lab_dir, site) / SPEAKER_SOCK


# The unix sockets a lab creates, by node role, in the node's directory: BIRD's control
# socket, the speaker's (made for every site, although under ExaBGP's bundled
# healthcheck no speaker API process runs) and the BFD responder's (with bgp.bfd).
NODE_SOCKETS = {"router": (BIRD_CTL,), "site": (SPEAKER_SOCK, BFD_CTL)}


# --- BIRD protocol names ----------------------------------------------------------------

def proto_name(node: str) -> str:
    """A node name as a BIRD protocol identifier ('r-eu' -> 'r_eu')."""
    return node.replace("-", "_")


def site_protocol(site: str) -> str:
    """The BGP session of a router to its site's speaker: `site_<site>`."""
    return f"site_{proto_name(site)}"


def router_protocol(peer: str, family: int) -> str:
    """A router's BGP session to a neighbouring router, one per family: `r_<peer>_<4|6>`."""
    return f"r_{proto_name(peer)}_{family}"


# BFD: the routers' protocol serving their BFD sessions (to sites; with bgp.bfd.routers
# to routers too), and the site responder's.
BFD_PROTOCOL = "bfd_peers"
BFD_RESPONDER_PROTOCOL = "bfd_responder"

# The kernel protocols, per family: what BIRD installs in the router's FIB.
KERNEL_PROTOCOLS = {4: "kernel4", 6: "kernel6"}


# --- DNS ----------------------------------------------------------------------------------

LAB_ZONE = "anycast.lab."                # the zone every site's Unbound serves
HEALTH_QNAME = f"health.{LAB_ZONE}"      # the name the health checks ask for
