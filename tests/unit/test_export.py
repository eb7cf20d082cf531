"""The containerlab export, without containerlab: every export of every shipped topology
and of a generated 50-site one is valid against containerlab's own topology schema; the
configs in an export are byte for byte what `up` renders; the exec lists are runnable as
containerlab runs them; hosts are joined by VXLAN links that pair up; and the writer
refuses what is not its own."""

from __future__ import annotations

import base64
import functools
import json
import os
import shlex
import sys
from pathlib import Path

import pytest
import yaml

from lab.export import clab, commands
from lab.export.paths import IMAGE_RUNTIME, LAB_DIR, Runtime
from lab.export.plan import plan_export
from lab.export.write import MARKER, render_files, write_export
from lab.model import Topology, load_text
from lab.model.errors import BadInput
from lab.model.generate import generate_topology
from lab.model.plan import build_plan
from lab.render import credentials, launch

from .helpers import json_error, run_cli

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT.parent / "shared" / "vendor" / "containerlab" / "clab.schema.json"
SHIPPED = sorted(p for p in (ROOT / "topologies").glob("*.yaml"))


def _load(text: str, source: str) -> Topology:
    report = load_text(text, source)
    assert report.ok, report.problems
    assert report.topology is not None
    return report.topology


def topologies() -> dict[str, Topology]:
    out = {p.stem: _load(p.read_text(), str(p)) for p in SHIPPED}
    out["generated-50"] = _load(yaml.safe_dump(generate_topology("gen50", 50, 5)), "gen50")
    return out


TOPOLOGIES = topologies()


@functools.cache
def material(name: str) -> dict[str, tuple[bytes, bool]]:
    return credentials.material(build_plan(TOPOLOGIES[name]))


def variants(topo: Topology) -> list[dict]:
    routers = len(topo.routers)
    out = [{}, {"clabernetes": True}]
    for n in sorted({2, 3, routers} & set(range(2, routers + 1))):
        out.append({"host_count": n})
    if routers >= 2:
        out.append({"host_count": 2, "clabernetes": True})
    return out


CASES = [(name, v) for name, topo in TOPOLOGIES.items() for v in variants(topo)]


def export_of(name: str, **kwargs):
    return plan_export(TOPOLOGIES[name], pki=material(name), **kwargs)


def _case_id(case: tuple[str, dict]) -> str:
    name, v = case
    return name + "".join(f"-{k}={val}" for k, val in v.items())


# containerlab's schema writes its address patterns for Go's regexp: an interface zone is
# `%[\p{N}\p{L}]+` (letters and digits), which Python's `re` cannot read. That one class is
# read as the same set in Python's syntax; every other pattern is used as it is.
GO_CLASS, PY_CLASS = "[\\p{N}\\p{L}]", "[^\\W_]"


def _go_pattern(validator, pattern, instance, schema):
    import re

    from jsonschema import ValidationError

    if validator.is_type(instance, "string") and not re.search(
            pattern.replace(GO_CLASS, PY_CLASS), instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


@pytest.fixture(scope="module")
def validator():
    if not SCHEMA.is_file():
        pytest.skip(f"containerlab's topology schema is not at {SCHEMA} (it sits beside "
                    "the repository, not in it)")
    import jsonschema

    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator(jsonschema.Draft7Validator.META_SCHEMA).validate(schema)
    checker = jsonschema.validators.extend(jsonschema.Draft7Validator,
                                           {"pattern": _go_pattern})
    return checker(schema, format_checker=jsonschema.FormatChecker())


def test_the_shipped_topologies_are_all_covered() -> None:
    assert {"default", "two-sites", "twelve-sites", "ecmp-ring"} <= set(TOPOLOGIES)
    assert len(TOPOLOGIES["generated-50"].sites) == 50


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_every_export_validates_against_containerlabs_schema(validator, case) -> None:
    name, v = case
    export = export_of(name, **v)
    files = render_files(export)
    docs = clab.documents(export)
    assert docs
    for file in docs:
        # What is checked is what is written: the YAML text read back.
        text = files[file][0]
        errors = sorted(validator.iter_errors(yaml.safe_load(text)), key=str)
        assert not errors, f"{file}: {errors[0].message} at {list(errors[0].absolute_path)}"


def test_the_validator_does_reject_a_broken_document(validator) -> None:
    doc = clab.document(export_of("default"), "host1")
    doc["topology"]["nodes"]["r-eu"]["kind"] = 42
    doc["topology"]["links"][0] = {"type": "vxlan", "endpoint": {"node": "r-eu"}}
    doc["topology"]["links"][1] = {"type": "vxlan", "remote": "host-b", "vni": 1,
                                   "dst-port": 14789,
                                   "endpoint": {"node": "r-eu", "interface": "r-us"}}
    assert len(list(validator.iter_errors(doc))) >= 3


def host_runtime() -> Runtime:
    """The programs `up` would run on this machine (as `lab_specs` finds them)."""
    from lab.host import env
    from lab.render.exabgp import SPEAKER_RUN

    return Runtime(python=sys.executable, tools=env.require_tools(launch.TOOLS),
                   speaker_run=str(SPEAKER_RUN))


def _has_tools() -> bool:
    from lab.host import env
    from lab.model.errors import LabError

    try:
        env.require_tools(launch.TOOLS)
    except LabError:
        return False
    return True


@pytest.mark.skipif(not _has_tools(), reason="needs bird, unbound and exabgp installed "
                    "(the paths `up` would use)")
@pytest.mark.parametrize("name", sorted(TOPOLOGIES))
def test_configs_in_the_export_are_byte_identical_to_what_up_renders(name: str) -> None:
    topo = TOPOLOGIES[name]
    plan = build_plan(topo)
    # `up`'s own entry point, for a lab directory at the container's path.
    ups = launch.lab_specs(topo, plan, Path(str(LAB_DIR)))
    export = plan_export(topo, pki=material(name), runtime=host_runtime())
    files = render_files(export)
    compared = 0
    for spec in ups:
        for path, text in commands.spec_files(spec):
            rel = str(Path(path).relative_to(Path(str(LAB_DIR))))
            assert files[rel][0] == text.encode(), f"{rel} differs from what up renders"
            compared += 1
    assert compared == len(ups) + sum(1 for s in ups if getattr(s, "healthcheck_config", None))
    if plan.issuer is not None:  # the issuer's config is among those compared
        assert [s.node for s in ups if s.name == "issuer"] == [plan.issuer.name]
        assert f"nodes/{plan.issuer.name}/issuer.json" in files
    for rel, (data, private) in material(name).items():
        assert files[f"pki/{rel}"] == (data, 0o600 if private else 0o644)


def test_the_image_runtime_changes_only_program_paths() -> None:
    """With the image's programs, the configs differ from the local ones only where a
    program's path is written (ExaBGP's API process line)."""
    topo = TOPOLOGIES["default"]
    local = render_files(plan_export(topo, pki=material("default"),
                                     runtime=Runtime(python="/P/python", tools={
                                         **IMAGE_RUNTIME.tools})))
    image = render_files(plan_export(topo, pki=material("default")))
    for rel, (data, _mode) in image.items():
        if rel.endswith(".clab.yml"):
            continue
        assert data.replace(IMAGE_RUNTIME.python.encode(), b"/P/python") == local[rel][0], rel


def test_the_api_process_line_names_the_images_files_not_this_checkouts() -> None:
    """In the image ExaBGP runs its API process as a module of the installed package,
    never by a path of the machine that exported."""
    files = render_files(export_of("default"))
    conf = next(data for rel, (data, _) in files.items() if rel.endswith("ams/exabgp.conf"))
    run_line = next(line for line in conf.decode().splitlines() if "run " in line)
    assert f"{IMAGE_RUNTIME.python} -m lab.sites.speaker.api --control" in run_line
    assert str(Path(__file__).resolve().parents[2]) not in conf.decode()


@pytest.mark.parametrize("name", ["default", "two-sites"])
def test_every_node_starts_with_the_state_up_writes(tmp_path: Path, name: str) -> None:
    """The issuer's revocation list and each site's list and keys, as `up`'s own
    `revoke_at_up` writes them into a lab directory (with an issuer and without)."""
    from lab.ops import tokenstore
    from lab.shared import identity

    topo = TOPOLOGIES[name]
    plan = build_plan(topo)
    files = render_files(export_of(name))
    (tmp_path / "pki").mkdir()
    for rel, (data, _private) in material(name).items():
        (tmp_path / "pki" / rel).write_bytes(data)
    jti = json.loads(material(name)["canaries.json"][0])["revoked_jti"]
    tokenstore.revoke_at_up(tmp_path, plan, jti)  # what `up` does, in a lab directory
    ups = {f"nodes/{d.name}/{f.name}": f.read_bytes()
           for d in (tmp_path / "nodes").iterdir() for f in d.iterdir()
           if not f.name.endswith(".lock")}
    ours = {rel for rel in files if rel.endswith(("/revoked.json", "/jwks.json"))}
    assert set(ups) == ours
    holders = ({plan.issuer.name} if plan.issuer else set()) | set(topo.sites)
    assert {rel.split("/")[1] for rel in ups} == holders
    for rel, data in ups.items():
        if rel.endswith("/jwks.json"):
            assert files[rel][0] == data, rel
            kids = {k["kid"] for k in json.loads(data)["keys"]}
            assert kids == {identity.kid_of(material(name)["signing.key"][0])}
        else:  # revoked when it was issued, not now: the rest is the same
            mine, theirs = json.loads(files[rel][0]), json.loads(data)
            assert mine["version"] == theirs["version"] == 1, rel
            assert set(mine["revoked"]) == set(theirs["revoked"]) == {jti}, rel
    if plan.issuer:
        assert f"nodes/{plan.issuer.name}/revoked.json" in ups
        assert all(f"nodes/{site}/jwks.json" in ups for site in topo.sites)


def test_a_node_gets_only_the_secrets_it_needs() -> None:
    export = export_of("default")
    issuer = export.nodes["issuer"]
    assert issuer.role == "issuer"
    for node in export.nodes.values():
        seen = {f.export_path for f in node.files}
        assert not seen & {"pki/ca.key", "pki/client-secrets.json", "pki/canaries.json"}, \
            node.name
        # The issuer alone signs: the signing key and its TLS key reach it and no other.
        assert ("pki/signing.key" in seen) == ("pki/issuer.key" in seen) == (node is issuer)
        if node.role == "site":
            assert "pki/server.key" in seen and f"nodes/{node.name}/unbound.conf" in seen
        else:
            assert "pki/server.key" not in seen
    assert {f.export_path for f in issuer.files} >= {
        "pki/issuer.pem", "pki/issuer.key", "pki/signing.key", "nodes/issuer/issuer.json",
        "nodes/issuer/revoked.json"}
    keys = [f for n in export.nodes.values() for f in n.files if f.export_path.endswith(".key")]
    assert keys and all(f.mode == 0o600 for f in keys)


@pytest.mark.parametrize("name", sorted(TOPOLOGIES))
def test_every_file_a_nodes_configs_name_reaches_that_node(name: str) -> None:
    """Each path under the lab's pki directory that a node's daemon configs name is one of
    that node's files (bound, or written by its exec list)."""
    import re

    export = export_of(name)
    pki = re.compile(re.escape(str(LAB_DIR / "pki")) + r"/[A-Za-z0-9._-]+")
    for node in export.nodes.values():
        mine = {f.container_path for f in node.files}
        named = {m for f in node.files if f.export_path.endswith((".json", ".conf"))
                 for m in pki.findall(f.data.decode())}
        assert named <= mine, (node.name, sorted(named - mine))


def test_state_a_daemon_replaces_is_written_by_the_exec_list_never_bound() -> None:
    export = export_of("default")
    for name in ("ams", "issuer"):
        node = export.nodes[name]
        kept = [f for f in node.files if f.keep]
        assert kept, name
        assert not any(b.split(":")[1] == f.container_path for b in node.binds for f in kept)
        for f in kept:
            writes = [c for c in node.exec if f"test -e {f.container_path} ||" in c]
            assert len(writes) == 1, (name, f.container_path)
            words = shlex.split(shlex.split(writes[0])[-1])
            assert base64.b64decode(words[words.index("echo") + 1]) == f.data
    assert {f.container_path.rsplit("/", 1)[1] for f in export.nodes["ams"].files
            if f.keep} == {"revoked.json", "jwks.json"}


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_exec_lists_run_without_a_shell_and_hide_nothing_from_containerlab(case) -> None:
    name, v = case
    export = export_of(name, **v)
    for node in export.nodes.values():
        assert node.exec, node.name
        for command in node.exec:
            argv = shlex.split(command)
            assert "$" not in command, command[:80]
            assert argv[0] in {"bash", "sysctl", "ip", "tc"}, command[:80]
            if argv[0] == "bash":
                assert argv[1] == "-c" and len(argv) == 3
                shlex.split(argv[2])  # the script itself parses


def test_a_nodes_exec_list_follows_the_fabric_then_the_launch_order() -> None:
    export = export_of("default")
    ams = export.nodes["ams"].exec
    joined = "\n".join(ams)
    first = [joined.index(s) for s in ("until ip link show dev r-eu", "sysctl -q -w",
                                       "ip addr replace 203.0.113.53/32 dev lo",
                                       "ip route replace default via",
                                       ".unbound.lock", "id.server CH TXT",
                                       ".introspect.lock", "/healthz", ".exabgp.lock",
                                       ".healthd.lock", "health-state.json 2>")]
    assert first == sorted(first)
    assert "net.ipv4.conf.r-eu.rp_filter=0" in joined
    router = "\n".join(export.nodes["r-eu"].exec)
    assert "net.ipv4.ip_forward=1" in router and "ip route replace default" not in router
    assert "birdc -s /opt/anycast-lab/run/nodes/r-eu/bird.ctl show status" in router
    issuer = export.nodes["issuer"].exec
    joined = "\n".join(issuer)
    first = [joined.index(s) for s in ("/nodes/issuer/revoked.json.new",
                                       "until ip link show dev r-us", "sysctl -q -w",
                                       "ip addr replace 100.64.0.19/31 dev r-us",
                                       "ip route replace default via 100.64.0.18",
                                       ".issuer.lock", "-m lab.sites.issuer --config",
                                       "issuer.anycast.lab:443:100.64.0.19")]
    assert first == sorted(first)
    doc = clab.document(export, "host1")["topology"]
    assert doc["nodes"]["issuer"]["labels"] == {"anycast-lab.role": "issuer"}
    assert {"endpoints": ["r-us:issuer", "issuer:r-us"]} in doc["links"]
    starts = [i for i, c in enumerate(issuer) if "-m lab.sites.issuer" in c]
    assert len(starts) == 1 and "/healthz" in issuer[starts[0] + 1]
    assert starts[0] + 2 == len(issuer)


def test_impairments_become_the_same_qdiscs() -> None:
    topo = TOPOLOGIES["default"].model_copy(deep=True)
    doc = topo.model_dump(mode="json")
    doc["links"][0]["impair"] = {"delay": "20ms", "jitter": "5ms", "loss": 1.5}
    doc["links"][1]["impair"] = {"rate": "10mbit"}
    topo = _load(yaml.safe_dump(doc), "impaired")
    export = plan_export(topo, pki=material("default"))
    eu = "\n".join(export.nodes["r-eu"].exec)
    assert "tc qdisc replace dev r-us root netem delay 20ms 5ms loss 1.5%" in eu
    us = "\n".join(export.nodes["r-us"].exec)
    assert "tc qdisc replace dev r-ap root tbf rate 10mbit burst 32768 latency 50000us" in us


@pytest.mark.parametrize("count", [2, 3])
def test_hosts_are_joined_by_vxlan_links_that_pair_up(count: int) -> None:
    export = export_of("default", host_count=count)
    docs = clab.documents(export)
    assert len(docs) == count
    assert sorted(docs) == sorted(f"default.host{i}.clab.yml" for i in range(1, count + 1))
    seen_nodes = [n for d in docs.values() for n in d["topology"]["nodes"]]
    assert sorted(seen_nodes) == sorted(export.nodes)
    tunnels: dict[int, list[tuple[str, dict]]] = {}
    for file, doc in docs.items():
        for link in doc["topology"].get("links", []):
            if link.get("type") == "vxlan":
                assert link["dst-port"] == 14789
                assert link["endpoint"]["node"] in doc["topology"]["nodes"]
                tunnels.setdefault(link["vni"], []).append((file, link))
            else:
                for end in link["endpoints"]:
                    assert end.split(":")[0] in doc["topology"]["nodes"]
    assert tunnels, "routers on different hosts need a tunnel"
    address = {h.name: h.address for h in export.hosts}
    for vni, ends in tunnels.items():
        assert len(ends) == 2, vni
        (fa, la), (fb, lb) = ends
        assert fa != fb
        host_of = {f: f.split(".")[1] for f in (fa, fb)}
        assert la["remote"] == address[host_of[fb]] and lb["remote"] == address[host_of[fa]]
    # every site and client is on its router's host: only router links cross
    for link in export.links:
        if link.crosses_hosts:
            assert export.nodes[link.a.node].role == export.nodes[link.b.node].role == "router"


def test_a_split_file_places_nodes_and_is_checked(tmp_path: Path) -> None:
    split = tmp_path / "split.yaml"
    split.write_text("hosts:\n  east: {address: 10.1.0.1, nodes: [r-eu]}\n"
                     "  west: {address: 10.1.0.2, nodes: [r-us, r-ap, c-eu]}\n")
    export = export_of("default", split_file=split)
    assert export.nodes["ams"].host == "east" and export.nodes["c-eu"].host == "west"
    crossing = {(ln.a.node, ln.b.node) for ln in export.links if ln.crosses_hosts}
    assert ("r-eu", "c-eu") in crossing and ("r-eu", "r-us") in crossing
    assert len({ln.vni for ln in export.links if ln.crosses_hosts}) == len(crossing)
    assert export.nodes["issuer"].host == "west"  # with its router, r-us
    split.write_text("hosts:\n  east: {address: 10.1.0.1, nodes: [r-eu, issuer]}\n"
                     "  west: {address: 10.1.0.2, nodes: [r-us, r-ap]}\n")
    moved = export_of("default", split_file=split)
    assert moved.nodes["issuer"].host == "east"
    assert ("r-us", "issuer") in {(ln.a.node, ln.b.node) for ln in moved.links
                                  if ln.crosses_hosts}
    for text, words in [("hosts:\n  a: {address: 10.0.0.1, nodes: [r-eu]}\n", "on no host"),
                        ("hosts:\n  a: {address: nope, nodes: [r-eu, r-us, r-ap]}\n",
                         "not an IP address"),
                        ("hosts:\n  a: {address: 10.0.0.1, nodes: [r-eu, r9]}\n", "unknown"),
                        ("- 1\n", "expected")]:
        split.write_text(text)
        with pytest.raises(BadInput, match=words):
            export_of("default", split_file=split)


def test_clabernetes_variant_has_no_binds_and_carries_every_file() -> None:
    export = export_of("default", clabernetes=True)
    doc = clab.document(export, "host1")
    for name, node in doc["topology"]["nodes"].items():
        assert "binds" not in node and "stages" not in node
        assert node["restart-policy"] in {"always", "unless-stopped"}
        written = {}
        for command in node["exec"]:
            script = shlex.split(command)[-1]
            if "base64 -d" in script:
                words = shlex.split(script)
                path = words[words.index(">") + 1].removesuffix(".new")
                written[path] = base64.b64decode(words[words.index("echo") + 1])
        expected = {f.container_path: f.data for f in export.nodes[name].files}
        assert written == expected, name
    kept = [c for c in doc["topology"]["nodes"]["ams"]["exec"] if "revoked.json" in c
            and "base64" in c]
    assert len(kept) == 1 and "test -e /opt/anycast-lab/run/nodes/ams/revoked.json ||" in kept[0]


def test_the_writer_writes_an_export_and_replaces_only_its_own(tmp_path: Path) -> None:
    out = tmp_path / "out"
    written = write_export(export_of("default"), out)
    assert written.deploy == {"host1": "default.clab.yml"}
    assert (out / "default.clab.yml").is_file() and (out / MARKER).is_file()
    assert oct((out / "pki" / "ca.key").stat().st_mode & 0o777) == "0o600"
    (out / "mine.txt").write_text("someone's notes")
    write_export(export_of("default", host_count=2), out)  # over an earlier export
    assert not (out / "default.clab.yml").exists()
    assert (out / "default.host1.clab.yml").is_file()
    assert (out / "mine.txt").read_text() == "someone's notes"


def test_the_writer_refuses_what_is_not_an_earlier_export(tmp_path: Path) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    with pytest.raises(BadInput, match="not empty"):
        write_export(export_of("default"), busy)
    assert sorted(os.listdir(busy)) == ["x"]
    link = tmp_path / "link"
    link.symlink_to(busy)
    with pytest.raises(BadInput, match="symlink"):
        write_export(export_of("default"), link)
    with pytest.raises(BadInput, match="parent"):
        write_export(export_of("default"), tmp_path / "no" / "such")
    fifo = tmp_path / "fifo"
    fifo.mkdir()
    os.mkfifo(fifo / MARKER)  # read, it would wait for a writer forever
    with pytest.raises(BadInput, match="not empty"):
        write_export(export_of("default"), fifo)


def test_the_writer_never_follows_a_planted_symlink(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_export(export_of("default"), out)
    victim = tmp_path / "victim"
    victim.mkdir()
    (out / "nodes" / "ams").rename(tmp_path / "old-ams")
    (out / "nodes" / "ams").symlink_to(victim)
    with pytest.raises(BadInput, match="symlink"):
        write_export(export_of("default"), out)
    assert list(victim.iterdir()) == []


def test_the_cli_says_which_file_each_host_deploys(tmp_path: Path, monkeypatch, capsys) -> None:
    out = tmp_path / "out"
    code, stdout, _ = run_cli(["export", "containerlab", str(ROOT / "topologies/default.yaml"),
                            "-o", str(out), "--hosts", "3", "--json"], monkeypatch, capsys)
    assert code == 0, stdout
    report = json.loads(stdout)
    assert report["ok"] and report["lab"] == "default" and report["vxlan_links"] == 3
    assert [h["deploys"] for h in report["hosts"]] == [
        f"default.host{i}.clab.yml" for i in (1, 2, 3)]
    assert all((out / h["deploys"]).is_file() for h in report["hosts"])
    code, stdout, _ = run_cli(["export", "containerlab", str(ROOT / "topologies/default.yaml"),
                            "-o", str(out)], monkeypatch, capsys)
    assert code == 0 and "host1: containerlab deploy -t default.clab.yml" in stdout


@pytest.mark.parametrize("argv, words", [
    (["--hosts", "2", "--split", "x.yaml"], "exclude each other"),
    (["--hosts", "9"], "--hosts must be between 1"),
    ([], "-o DIR"),
])
def test_the_cli_refuses_bad_input_with_exit_2(argv, words, tmp_path: Path, monkeypatch,
                                               capsys) -> None:
    out = [] if not argv else ["-o", str(tmp_path / "o")]
    code, stdout, stderr = run_cli(["export", "containerlab",
                                    str(ROOT / "topologies/default.yaml"), *out, *argv,
                                    "--json"], monkeypatch, capsys)
    error = json_error(code, stdout, stderr)
    assert code == 2 == error["exit_code"] and words in error["message"]
    assert not (tmp_path / "o").exists()


def test_an_export_cut_short_is_still_known_as_ours(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_export(export_of("default"), out)
    for path in sorted((out / "nodes").rglob("*"))[5:]:  # as if the disk filled up
        if path.is_file():
            path.unlink()
    (out / "default.clab.yml").unlink()
    written = write_export(export_of("default"), out)
    assert all((out / rel).is_file() for rel in written.files)
