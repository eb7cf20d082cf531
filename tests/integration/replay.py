"""A local replay of a containerlab export: what `containerlab deploy` would build from the
topology files the export wrote, made here without containerlab, so an export's exec lists
are proven to build a working lab.

It reads what containerlab reads: each host's topology file (the export's marker says which
host deploys which), its nodes' binds and exec lists, its links. Per node, a "container": a
network namespace of its own (named `aclr-<id>.<node>`: never `acl.`, so no lab's `down`
takes it for one of its namespaces, and it never touches theirs), and an init process
(`sleep infinity`, PID 1 of its own PID namespace, in its own mount namespace) that holds
the node's view of the filesystem:

- a tmpfs on /opt, standing in for the image's /opt, with the image's program paths:
  this checkout's virtual environment bind-mounted at /opt/anycast-lab/venv (the one path
  that differs from the image: the same package, installed here in editable mode);
- every bind of the node, file by file, at its container path (read-only where the bind
  says `:ro`), as docker binds them; none for the clabernetes variant, whose exec list
  writes the files itself.

Links in one file are veth pairs created straight into the two namespaces (no end in the
root namespace), named as the endpoints say, with no address: the exec lists do the rest.
Several files are several hosts: each host is a namespace (`aclr-<id>.host-<name>`) with
an uplink, on one underlay bridge (`aclr-<id>.underlay`), carrying the host's address; a
`type: vxlan` link is, on its host, a VXLAN device (its VNI, towards its `remote`, on its
`dst-port`) bridged to a veth whose other end is the node's interface. containerlab
stitches the two with tc redirects; a bridge does the same at layer 2.

Each exec string is split like containerlab splits it (no shell) and run in the node
(`nsenter` into its init's network, mount and PID namespaces), in order.

Everything is written to the replay's record (a JSONL file) before it is created, and
`teardown` removes what the record lists, only that: each init is killed by its PID and
start time (its PID namespace goes with it, and every daemon in it), then each namespace.
The host reads a node's files through /proc/<init>/root (the `view` directory), so the
lab's own checks (`wait_converged`, BIRD's sockets) run unchanged.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pyroute2 import IPRoute, netns

from lab.export.paths import IMAGE_ROOT, VENV
from lab.export.write import MARKER
from lab.host import procs

PREFIX = "aclr"
EXEC_TIMEOUT_S = 120
ENV = {"PATH": f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
       "HOME": "/root", "LANG": "C.UTF-8"}


@dataclass
class ExecResult:
    node: str
    command: str
    returncode: int
    output: str
    seconds: float


@dataclass(frozen=True)
class Bind:
    source: Path
    target: str
    read_only: bool


@dataclass
class Node:
    name: str
    host: str
    binds: list[Bind]
    exec: list[str]


@dataclass
class Replay:
    directory: Path          # the export directory (binds are relative to it)
    work: Path               # the record and the view live here
    run_id: str = field(default_factory=lambda: secrets.token_hex(3))
    inits: dict[str, int] = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)
    docs: dict[str, dict] = field(default_factory=dict)   # host -> its topology document

    def __post_init__(self) -> None:
        marker = json.loads((self.directory / MARKER).read_text())
        for host, file in marker["deploy"].items():
            doc = yaml.safe_load((self.directory / file).read_text())
            self.docs[host] = doc
            for name, spec in doc["topology"]["nodes"].items():
                assert spec["kind"] == "linux"
                self.nodes[name] = Node(name, host, [self._bind(b) for b in
                                                     spec.get("binds", [])],
                                        list(spec.get("exec", [])))

    def _bind(self, text: str) -> Bind:
        parts = text.split(":")
        assert len(parts) in (2, 3) and (len(parts) == 2 or parts[2] == "ro"), text
        source = Path(parts[0])
        assert not source.is_absolute() and ".." not in source.parts, text
        return Bind(self.directory / source, parts[1], len(parts) == 3)

    @property
    def record_path(self) -> Path:
        return self.work / "replay-record.jsonl"

    @property
    def view(self) -> Path:
        return self.work / "view"

    def netns_of(self, node: str) -> str:
        return f"{PREFIX}-{self.run_id}.{node}"

    def _record(self, **entry: object) -> None:
        with open(self.record_path, "a") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _netns(self, name: str) -> str:
        self._record(kind="netns", name=name)
        netns.create(name)
        return name

    # --- building: what containerlab does before the exec lists ----------------------

    def build(self) -> None:
        for name in self.nodes:
            self._netns(self.netns_of(name))
        if len(self.docs) > 1:
            self._underlay()
        for host, doc in self.docs.items():
            for link in doc["topology"].get("links", []):
                if link.get("type") == "vxlan":
                    self._vxlan(host, link)
                else:
                    self._veth(link["endpoints"])
        for name in self.nodes:
            self._start_init(name)
        (self.view / "nodes").mkdir(parents=True)
        (self.view / "pki").symlink_to(self.directory / "pki")
        for name, pid in self.inits.items():
            (self.view / "nodes" / name).symlink_to(
                f"/proc/{pid}/root{IMAGE_ROOT}/run/nodes/{name}")

    def _veth(self, endpoints: list[str]) -> None:
        (a, ia), (b, ib) = (e.split(":", 1) for e in endpoints)
        with IPRoute(netns=self.netns_of(a), flags=0) as ipr:
            ipr.link("add", ifname=ia, kind="veth",
                     peer={"ifname": ib, "net_ns_fd": self.netns_of(b)})

    def host_netns(self, host: str) -> str:
        return f"{PREFIX}-{self.run_id}.host-{host}"

    def host_addresses(self) -> dict[str, str]:
        """Each host's address, as the other hosts' vxlan links name it (`remote`)."""
        out: dict[str, str] = {}
        vnis = {h: {ln["vni"]: ln for ln in d["topology"].get("links", [])
                    if ln.get("type") == "vxlan"} for h, d in self.docs.items()}
        for host, links in vnis.items():
            for vni in links:
                other = next(h for h in vnis if h != host and vni in vnis[h])
                out.setdefault(host, vnis[other][vni]["remote"])
        return out

    def _underlay(self) -> None:
        under = self._netns(f"{PREFIX}-{self.run_id}.underlay")
        ip("-n", under, "link", "add", "br0", "type", "bridge")
        ip("-n", under, "link", "set", "br0", "up")
        addresses = self.host_addresses()
        for i, host in enumerate(self.docs):
            ns = self._netns(self.host_netns(host))
            ip("-n", ns, "link", "add", "uplink", "type", "veth", "peer", "name", f"h{i}",
               "netns", under)
            ip("-n", under, "link", "set", f"h{i}", "master", "br0", "up")
            ip("-n", ns, "addr", "add", f"{addresses[host]}/32", "dev", "uplink")
            ip("-n", ns, "link", "set", "uplink", "up")
            for other, address in addresses.items():
                if other != host:
                    ip("-n", ns, "route", "add", f"{address}/32", "dev", "uplink")

    def _vxlan(self, host: str, link: dict) -> None:
        ns, vni = self.host_netns(host), str(link["vni"])
        node, ifname = link["endpoint"]["node"], link["endpoint"]["interface"]
        local = self.host_addresses()[host]
        ip("-n", ns, "link", "add", f"vx{vni}", "type", "vxlan", "id", vni, "remote",
           link["remote"], "local", local, "dstport", str(link["dst-port"]), "dev", "uplink")
        ip("-n", ns, "link", "add", f"c{vni}", "type", "veth", "peer", "name", ifname,
           "netns", self.netns_of(node))
        ip("-n", ns, "link", "add", f"b{vni}", "type", "bridge")
        for dev in (f"vx{vni}", f"c{vni}"):
            ip("-n", ns, "link", "set", dev, "master", f"b{vni}", "up")
        ip("-n", ns, "link", "set", f"b{vni}", "up")

    def vxlan_received(self) -> dict[str, int]:
        """Packets each host's VXLAN devices received: `<host>/vx<vni>` -> count."""
        out = {}
        for host in self.docs if len(self.docs) > 1 else []:
            with IPRoute(netns=self.host_netns(host), flags=0) as ipr:
                for link in ipr.get_links():
                    name = link.get_attr("IFLA_IFNAME")
                    if name.startswith("vx"):
                        out[f"{host}/{name}"] = link.get_attr("IFLA_STATS64")["rx_packets"]
        return out

    def _mount_script(self, node: str) -> str:
        lines = ["set -e", "mount -t tmpfs -o mode=755 tmpfs /opt",
                 f"mkdir -p {VENV} {IMAGE_ROOT}/run",
                 f"mount --bind {shlex.quote(sys.prefix)} {VENV}"]
        for bind in self.nodes[node].binds:
            target = shlex.quote(bind.target)
            lines += [f"mkdir -p {shlex.quote(str(Path(bind.target).parent))}",
                      f"touch {target}", f"mount --bind {shlex.quote(str(bind.source))} "
                      f"{target}"]
            if bind.read_only:
                lines.append(f"mount -o remount,bind,ro {target}")
        lines.append("exec sleep infinity")
        return "\n".join(lines)

    def _start_init(self, node: str) -> None:
        ns = self.netns_of(node)
        self._record(kind="process-intent", node=node, netns=ns)
        # unshare --kill-child: if unshare dies, its child (the init) is killed, and with
        # it the PID namespace's every process.
        proc = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{ns}", "--", "unshare", "--mount", "--pid",
             "--fork", "--kill-child", "--mount-proc", "--propagation", "private", "--",
             "bash", "-c", self._mount_script(node)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env=ENV, cwd="/", start_new_session=True)
        self._record(kind="process", node=node, pid=proc.pid,
                     start_time=procs.start_time(proc.pid))
        init = self._wait_init(proc)
        self._record(kind="process", node=node, pid=init, start_time=procs.start_time(init),
                     init=True)
        self.inits[node] = init

    def _wait_init(self, proc: subprocess.Popen) -> int:
        """The init's PID once its mounts are made (it is `sleep` then)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"a node's init failed: {proc.stderr.read().decode()}")
            for child in _children(proc.pid):
                if _comm(child) == "sleep":
                    return child
            time.sleep(0.02)
        raise RuntimeError("a node's init did not start within 10 s")

    # --- the exec lists -----------------------------------------------------------------

    def run_exec(self, node: str) -> list[ExecResult]:
        """Run a node's exec list in order, as containerlab does; stop at a failure."""
        results = []
        for command in self.nodes[node].exec:
            argv = shlex.split(command)
            began = time.monotonic()
            done = subprocess.run(
                ["nsenter", "-t", str(self.inits[node]), "-n", "-m", "-p", "--", *argv],
                capture_output=True, text=True, timeout=EXEC_TIMEOUT_S, env=ENV, cwd="/",
                stdin=subprocess.DEVNULL)
            results.append(ExecResult(node, command, done.returncode,
                                      (done.stdout + done.stderr)[-2000:],
                                      time.monotonic() - began))
            if done.returncode != 0:
                break
        return results

    def processes(self, node: str) -> dict[int, str]:
        """The processes in a node's PID namespace: PID (as the host sees it) -> cmdline."""
        want = os.stat(f"/proc/{self.inits[node]}/ns/pid").st_ino
        out = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                if os.stat(f"/proc/{entry}/ns/pid").st_ino != want:
                    continue
                raw = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            out[int(entry)] = raw.replace(b"\0", b" ").decode(errors="replace").strip()
        return out

    # --- teardown: only what the record lists --------------------------------------------

    def teardown(self) -> dict[str, int]:
        removed = {"processes": 0, "namespaces": 0}
        if not self.record_path.exists():
            return removed
        entries = [json.loads(line) for line in self.record_path.read_text().splitlines()]
        started = [e for e in entries if e["kind"] == "process" and e.get("start_time")]
        inits = [e for e in started if e.get("init")]
        wrappers = [e for e in started if not e.get("init")]
        # Inits first: each takes its PID namespace, and every daemon in it, along; its
        # `unshare` reaps it and exits. A wrapper still there after that is killed too.
        for entry in inits:
            if _alive(entry["pid"], entry["start_time"]):
                os.kill(entry["pid"], signal.SIGKILL)
                removed["processes"] += 1
        for entry in wrappers:
            _wait_gone(entry["pid"], entry["start_time"])
            if _alive(entry["pid"], entry["start_time"]):
                os.kill(entry["pid"], signal.SIGKILL)
                _wait_gone(entry["pid"], entry["start_time"])
        for entry in inits:
            _wait_gone(entry["pid"], entry["start_time"])
        for entry in entries:
            if entry["kind"] == "netns" and entry["name"].startswith(f"{PREFIX}-{self.run_id}."):
                try:
                    netns.remove(entry["name"])
                    removed["namespaces"] += 1
                except FileNotFoundError:
                    pass
        return removed

    def leftovers(self) -> dict[str, list]:
        ours = f"{PREFIX}-{self.run_id}."
        return {"namespaces": [n for n in netns.listnetns() if n.startswith(ours)],
                "inits": [p for p in self.inits.values() if _alive(p, None)]}


def ip(*args: str) -> None:
    """`ip -n NAMESPACE ...`: always in one of the replay's namespaces."""
    assert args[0] == "-n" and args[1].startswith(f"{PREFIX}-"), args
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def _children(pid: int) -> list[int]:
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            text = Path(f"/proc/{pid}/task/{task}/children").read_text()
            out += [int(c) for c in text.split()]
    except OSError:
        pass
    return out


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _alive(pid: int, start: int | None) -> bool:
    """Running (a zombie is not), and the same process when a start time is given."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rpartition(")")[2].split()[0] == "Z":
        return False
    return start is None or procs.start_time(pid) == start


def _wait_gone(pid: int, start: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):  # our own child (unshare): reap it
            os.waitpid(pid, os.WNOHANG)
        if not _alive(pid, start):
            return
        time.sleep(0.02)
