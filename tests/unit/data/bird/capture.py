"""Re-capture the BIRD answers in this folder from real BIRD processes (run as root).

    .venv/bin/python tests/unit/data/bird/capture.py lab         # a real lab, ECMP on
    .venv/bin/python tests/unit/data/bird/capture.py standalone  # session states a lab never holds

`lab` builds the default triangle with `bgp: {ecmp: true}` under a unique name, drives it
with the lab's own commands (fail, heal, drain) and asks each router's BIRD the lab's
questions (`birdc -s CTL -r COMMAND`); it takes the lab down at the end.

`standalone` starts one BIRD in a namespace of its own (created and deleted here) with
sessions towards scripted TCP peers on loopback addresses: one that accepts and stays
silent (OpenSent), one that answers with an OPEN and nothing else (OpenConfirm), one that
opens with the wrong AS (BIRD refuses it: Idle during its error wait), a passive session
and a disabled one.

Each file holds BIRD's answer byte for byte; README.md says which state each one shows.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[3]
CLI = str(Path(sys.executable).parent / "anycast-lab")
V4, V6 = "203.0.113.53/32", "2001:db8:53::53/128"


def birdc(ctl: Path, command: str) -> str:
    """birdc's answer, kept even when birdc exits 1 (the lab's own client, lab.host.birdctl,
    reads the same text from the control socket: tests/integration/test_birdctl.py)."""
    argv = ["birdc", "-s", str(ctl), "-r", *command.split()]
    return subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False).stdout


def save(name: str, text: str) -> None:
    (HERE / name).write_text(text)
    print(f"wrote {name}")


def wait_for(what: str, condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise SystemExit(f"gave up waiting for {what}")


def state(protocols: str, proto: str) -> str:
    """'start Active', 'up Established', 'down': a protocol's state and BGP state."""
    for line in protocols.splitlines():
        parts = line.split()
        if parts and parts[0] == proto:
            return " ".join(parts[3:4] + parts[5:6])
    return ""


def cli(*args: str) -> None:
    subprocess.run([CLI, *args], check=True, stdout=subprocess.DEVNULL)


def capture_lab() -> None:
    data = yaml.safe_load((REPO / "topologies" / "default.yaml").read_text())
    name = f"h5cap-{secrets.token_hex(3)}"
    data["name"] = name
    data["bgp"] = {"ecmp": True}
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(data, f)
    try:
        cli("up", f.name, "--name", name)
        _drive_lab(name)
    finally:
        subprocess.run([CLI, "down", "--lab", name], check=False)
        os.unlink(f.name)


def _drive_lab(lab: str) -> None:
    nodes = Path("/run/anycast-lab") / lab / "nodes"
    ctl = {r: nodes / r / "bird.ctl" for r in ("r-eu", "r-us", "r-ap")}

    def show(router: str, command: str) -> str:
        return birdc(ctl[router], command)

    def r_eu_from_ams(present: bool) -> Callable[[], bool]:
        return lambda: all(("[site_ams " in show("r-eu", f"show route for {p} all")) == present
                           for p in (V4, V6))

    # Every site up: r-eu's best path is its own site, the two others are alternatives.
    wait_for("ams best at r-eu", r_eu_from_ams(True))
    save("protocols-established.txt", show("r-eu", "show protocols"))
    save("protocols-all-established.txt", show("r-eu", "show protocols all site_ams"))
    save("route4-best-with-alternatives.txt", show("r-eu", f"show route for {V4} all"))
    save("route6-best-with-alternatives.txt", show("r-eu", f"show route for {V6} all"))
    save("route4-export-single.txt", show("r-eu", f"show route for {V4} export kernel4 all"))
    save("route4-link-prefix.txt", show("r-eu", "show route for 100.64.0.0/31 all"))

    # Draining ams: for drain_delay_ms it announces with GRACEFUL_SHUTDOWN, local pref 0.
    cli("drain", "--lab", lab, "ams")
    wait_for("graceful shutdown at r-eu", lambda: all(
        "(65535,0)" in show("r-eu", f"show route for {p} all") for p in (V4, V6)), 2.0)
    save("route4-draining-alternative.txt", show("r-eu", f"show route for {V4} all"))
    save("route6-draining-alternative.txt", show("r-eu", f"show route for {V6} all"))
    cli("undrain", "--lab", lab, "ams")
    wait_for("ams back at r-eu", r_eu_from_ams(True))

    # ams withdrawn: two equal AS paths (via r-us and r-ap); the kernel gets both.
    cli("fail", "--lab", lab, "ams", "dns")
    wait_for("ams gone at r-eu", r_eu_from_ams(False))
    wait_for("ECMP at r-eu", lambda: all(
        show("r-eu", f"show route for {p} export kernel{k} all").count("\tvia ") == 2
        for p, k in ((V4, 4), (V6, 6))))
    save("route4-ecmp-table.txt", show("r-eu", f"show route for {V4} all"))
    save("route6-ecmp-table.txt", show("r-eu", f"show route for {V6} all"))
    save("route4-ecmp-export.txt", show("r-eu", f"show route for {V4} export kernel4 all"))
    save("route6-ecmp-export.txt", show("r-eu", f"show route for {V6} export kernel6 all"))
    for router in ("r-us", "r-ap"):  # so a test can follow r-eu's path hop by hop
        save(f"route4-ecmp-export-{router}.txt",
             show(router, f"show route for {V4} export kernel4 all"))
        save(f"route6-ecmp-export-{router}.txt",
             show(router, f"show route for {V6} export kernel6 all"))

    # Every site withdrawn: no route anywhere.
    cli("fail", "--lab", lab, "nyc", "dns")
    cli("fail", "--lab", lab, "sin", "dns")
    wait_for("no route at r-eu", lambda: all(
        "unicast" not in show("r-eu", f"show route for {p} all") for p in (V4, V6)))
    save("route4-withdrawn.txt", show("r-eu", f"show route for {V4} all"))
    save("route6-withdrawn.txt", show("r-eu", f"show route for {V6} all"))
    save("route4-export-withdrawn.txt", show("r-eu", f"show route for {V4} export kernel4 all"))
    for site in ("ams", "nyc", "sin"):
        cli("heal", "--lab", lab, site)

    # Sessions broken four ways: speaker killed (r-eu: Active, connection refused),
    # site link blackholed (r-us: hold timer expired, then Connect), site link down
    # (r-ap: Idle), a router session disabled by hand (r-eu: down; r-us: Active).
    wait_for("ams best again", r_eu_from_ams(True))
    cli("fail", "--lab", lab, "ams", "speaker")
    cli("fail", "--lab", lab, "nyc", "blackhole")
    cli("fail", "--lab", lab, "sin", "link")
    subprocess.run(["birdc", "-s", str(ctl["r-eu"]), "disable", "r_r_us_4"], check=True,
                   stdout=subprocess.DEVNULL)

    def info(router: str, proto: str) -> str:
        return state(show(router, "show protocols"), proto)

    wait_for("broken sessions", lambda: info("r-eu", "site_ams") == "start Active"
             and info("r-us", "site_nyc") == "start Connect"
             and info("r-ap", "site_sin") == "start Idle"
             and info("r-eu", "r_r_us_4") == "down", 15.0)
    save("protocols-broken-r-eu.txt", show("r-eu", "show protocols"))
    save("protocols-broken-r-us.txt", show("r-us", "show protocols"))
    save("protocols-broken-r-ap.txt", show("r-ap", "show protocols"))


# A BGP OPEN (RFC 4271 4.2) with no optional parameters.
def bgp_open(asn: int, hold: int, router_id: str) -> bytes:
    body = struct.pack("!BHH4sB", 4, asn, hold, socket.inet_aton(router_id), 0)
    return b"\xff" * 16 + struct.pack("!HB", 19 + len(body), 1) + body


STANDALONE_CONF = """\
log stderr all;
router id 10.0.0.1;
protocol device {}
template bgp peer {
  local 127.0.0.1 as 65001;
  multihop;
  ipv4 { import all; export none; };
  hold time 240;
  connect delay time 1;
  connect retry time 1;
  error wait time 600, 600;
}
protocol bgp silent_peer from peer { neighbor 127.0.0.2 port 1790 as 65002; }
protocol bgp open_only_peer from peer { neighbor 127.0.0.3 port 1790 as 65003; }
protocol bgp wrong_as_peer from peer { neighbor 127.0.0.4 port 1790 as 65004; }
protocol bgp passive_peer from peer { neighbor 127.0.0.5 as 65005; passive on; }
protocol bgp disabled_peer from peer { neighbor 127.0.0.6 as 65006; disabled; }
"""


def scripted_peer(address: str, answer: bytes | None, conns: list[socket.socket]) -> None:
    """Accept BIRD's connection; send `answer` (if any) and then stay silent."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((address, 1790))
    srv.listen()
    conns.append(srv)

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            conns.append(conn)
            if answer:
                conn.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()


def capture_standalone() -> None:
    netns = f"h5cap-{secrets.token_hex(3)}"
    work = Path(tempfile.mkdtemp(prefix="h5cap-"))
    conf, ctl = work / "bird.conf", work / "bird.ctl"
    conf.write_text(STANDALONE_CONF)
    subprocess.run(["ip", "netns", "add", netns], check=True)
    bird = None
    try:
        subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
        # The scripted peers live in this process, inside the namespace.
        from pyroute2.netns import setns
        home = os.open("/proc/self/ns/net", os.O_RDONLY)
        setns(netns, flags=0)
        conns: list[socket.socket] = []
        try:
            scripted_peer("127.0.0.2", None, conns)
            scripted_peer("127.0.0.3", bgp_open(65003, 240, "10.0.0.3"), conns)
            scripted_peer("127.0.0.4", bgp_open(65099, 240, "10.0.0.4"), conns)
        finally:
            setns(home)
            os.close(home)
        bird = subprocess.Popen(["nsenter", f"--net=/run/netns/{netns}", "--", "bird", "-f",
                                 "-c", str(conf), "-s", str(ctl), "-P", str(work / "pid")],
                                stderr=subprocess.DEVNULL)

        def info(proto: str) -> str:
            return state(birdc(ctl, "show protocols"), proto)

        wait_for("scripted sessions", lambda: info("silent_peer") == "start OpenSent"
                 and info("open_only_peer") == "start OpenConfirm"
                 and info("wrong_as_peer") == "start Idle", 15.0)
        save("protocols-standalone.txt", birdc(ctl, "show protocols"))
        save("protocols-all-standalone.txt", birdc(ctl, "show protocols all"))
    finally:
        if bird is not None:
            bird.terminate()
            bird.wait(5)
        subprocess.run(["ip", "netns", "delete", netns], check=True)
        shutil.rmtree(work)


if __name__ == "__main__":
    {"lab": capture_lab, "standalone": capture_standalone}[sys.argv[1]]()
