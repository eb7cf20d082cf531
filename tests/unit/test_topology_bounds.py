"""The reader's bounds and YAML 1.2 numbers, the lab-name rule, and the largest lab the
bounds allow (which must still validate)."""

from __future__ import annotations

import itertools
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.model import Problem, load_file, load_text, safeyaml, valid_lab_name
from lab.model import topology as m

REPO = Path(__file__).resolve().parents[2]
MINIMAL = (REPO / "tests" / "topologies" / "good" / "minimal.yaml").read_text()
BAD = REPO / "tests" / "topologies" / "bad"


def _messages(text: str) -> list[str]:
    return [f"{p.line}: {p}" for p in load_text(text).problems]


@pytest.mark.parametrize(("written", "read"), [
    ("0777", 777), ("0o17", 15), ("0x1f", 31), ("-12", -12), ("+12", 12), ("1:2:3", "1:2:3"),
    ("1_000", "1_000"), ("0b101", "0b101"), ("1e3", 1000.0), (".inf", float("inf")),
    ("yes", True), ("off", False), ("~", None), ("2001-12-14", "2001-12-14"),
    ("'0777'", "0777"),
])
def test_yaml_1_2_numbers(written: str, read: Any) -> None:
    assert safeyaml.safe_load(f"v: {written}\n") == {"v": read}


def test_a_leading_zero_is_decimal_not_octal() -> None:
    report = load_text(MINIMAL.replace("65001", "0777"))
    assert report.ok and report.topology is not None
    assert report.topology.routers["r1"].asn == 777


@pytest.mark.parametrize("text", ["v: !!int abc\n", "v: !!bool maybe\n", "v: !!float x\n",
                                  "v: !!timestamp 2001-13-45\n", "v: !!int 1:2:3\n"])
def test_explicit_tags_with_bad_values_are_yaml_errors(text: str) -> None:
    with pytest.raises(yaml.YAMLError):
        safeyaml.safe_load(text)


def test_an_anchor_without_an_alias_is_fine() -> None:
    report = load_text(MINIMAL.replace("r1: {asn: 65001}", "r1: &first {asn: 65001}"))
    assert report.ok, _messages(MINIMAL)


def test_nesting_at_the_bound_is_read_and_one_deeper_refused() -> None:
    def nested(depth: int) -> str:  # the file's mapping is level 1
        return "v: " + "[" * (depth - 1) + "]" * (depth - 1) + "\n"

    assert safeyaml.safe_load(nested(safeyaml.MAX_DEPTH)) is not None
    with pytest.raises(safeyaml.Refused, match="nested more than 10 levels"):
        safeyaml.safe_load(nested(safeyaml.MAX_DEPTH + 1))


def test_too_many_nodes_is_refused_while_reading() -> None:
    text = "v: [" + ",".join("1" for _ in range(safeyaml.MAX_NODES)) + "]\n"
    problems = load_text(text).problems
    # The file's mapping, the key v and the list are three nodes: item MAX_NODES - 3 is one
    # too many.
    assert [(p.path, p.line) for p in problems] == [(f"v[{safeyaml.MAX_NODES - 3}]", 1)]
    assert "more than 20000 YAML nodes" in problems[0].message


def test_integers_at_the_digit_bound() -> None:
    assert safeyaml.safe_load("v: " + "9" * 20 + "\n") == {"v": 10**20 - 1}
    with pytest.raises(safeyaml.Refused, match="21-digit number"):
        safeyaml.safe_load("v: " + "9" * 21 + "\n")


def test_oversized_text_and_file(tmp_path: Path) -> None:
    big = MINIMAL + "#" * safeyaml.MAX_FILE_BYTES
    assert _messages(big) == ["None: the topology is larger than 256 KiB, the most a topology "
                              "file may hold (the largest lab allowed needs about 100 KiB)"]
    path = tmp_path / "big.yaml"
    path.write_text(big)
    [problem] = load_file(path).problems
    assert problem.message.startswith(f"file '{path}' is larger than 256 KiB")
    path.write_text(MINIMAL + "#" * (safeyaml.MAX_FILE_BYTES - len(MINIMAL) - 1) + "\n")
    assert load_file(path).ok


def test_an_endless_file_is_read_only_up_to_the_bound() -> None:
    [problem] = load_file("/dev/zero").problems
    assert "larger than 256 KiB" in problem.message


def test_problems_print_on_one_line() -> None:
    problem = Problem("sites.s1\n", "name 's1\n\x00' is bad", 3)
    assert str(problem) == "sites.s1\\n: name 's1\\n\\x00' is bad"
    assert problem.path == "sites.s1\n"  # JSON keeps the name as written


@pytest.mark.parametrize("name", ["a", "lab-1", "a" * 24, "default"])
def test_valid_lab_names(name: str) -> None:
    assert valid_lab_name(name)


@pytest.mark.parametrize("name", ["", "a" * 25, "lab\n", "Lab", "1lab", "-lab", "a.b", "a/b",
                                  "../x", "/tmp/x", "a_b", "a b", None, 7])
def test_invalid_lab_names(name: object) -> None:
    assert not valid_lab_name(name)


@pytest.mark.parametrize(("rate", "ok"), [
    ("1kbit", True), ("999bit", False), ("34gbit", True), ("35gbit", False),
    (f"{m.MAX_RATE_BIT}bit", True), (f"{m.MAX_RATE_BIT + 1}bit", False),
    ("000000000000000000000000010mbit", True), ("9" * 5000 + "gbit", False),
])
def test_rate_bounds(rate: str, ok: bool) -> None:
    report = load_text(MINIMAL + f"    impair: {{rate: '{rate}'}}\n")
    assert report.ok is ok, _messages(MINIMAL + f"    impair: {{rate: '{rate}'}}\n")


@pytest.mark.parametrize(("delay", "ok"), [("60s", True), ("60000ms", True), ("60.001s", False),
                                           ("60000001us", False), ("1" * 400 + "s", False)])
def test_delay_bounds(delay: str, ok: bool) -> None:
    assert load_text(MINIMAL + f"    impair: {{delay: '{delay}'}}\n").ok is ok


@pytest.mark.parametrize("field", ["delay", "jitter"])
@pytest.mark.parametrize(("text", "form"), [("10 ms", "10ms"), ("1.5  s", "1.5s"),
                                            ("500\tus", "500us")])
def test_a_duration_with_a_space_is_refused_naming_the_accepted_form(
        field: str, text: str, form: str) -> None:
    impair = {"delay": "60s", field: text}
    text_yaml = MINIMAL + "    impair: {" + ", ".join(
        f"{k}: '{v}'" for k, v in impair.items()) + "}\n"
    report = load_text(text_yaml)
    assert report.ok is False
    messages = "\n".join(_messages(text_yaml))
    assert f"like '{form}'" in messages and "space" in messages, messages
    assert load_text(MINIMAL + "    impair: {" + ", ".join(
        f"{k}: '{form if k == field else v}'" for k, v in impair.items()) + "}\n").ok


def test_the_largest_lab_the_bounds_allow_validates() -> None:
    """Every section at its limit, long names, every optional field: under the node and
    size bounds, and valid (so the bounds refuse nothing a real lab needs)."""
    routers = [f"router-{i:02d}-abcd" for i in range(m.MAX_ROUTERS)]
    sites = [f"site-{i:03d}-abcde" for i in range(m.MAX_SITES)]
    topo = {
        "name": "a" * 24, "description": "the largest lab the bounds allow",
        "routers": {r: {"asn": 4200000000 + i, "router_id": f"10.0.{i}.1"}
                    for i, r in enumerate(routers)},
        "sites": {s: {"router": routers[i % m.MAX_ROUTERS], "asn": 4210000000}
                  for i, s in enumerate(sites)},
        "clients": {f"client-{i:03d}-abc": {"router": routers[i % m.MAX_ROUTERS],
                                            "expect": sites[i % m.MAX_SITES],
                                            "failover": sites[(i + 1) % m.MAX_SITES]}
                    for i in range(m.MAX_CLIENTS)},
        "links": [{"endpoints": [a, b], "impair": {"delay": "20ms", "jitter": "5ms",
                                                  "loss": 0.5, "rate": "100mbit"}}
                  for a, b in itertools.islice(itertools.combinations(routers, 2),
                                               m.MAX_LINKS)],
    }
    text = yaml.safe_dump(topo, sort_keys=False, default_flow_style=False)
    assert len(text.encode()) < safeyaml.MAX_FILE_BYTES / 2
    report = load_text(text)
    assert report.ok, _messages(text)[:5]


@pytest.mark.timeout(20)
@pytest.mark.parametrize("case", ["yaml-alias-bomb", "yaml-recursive-alias", "yaml-deep-nesting",
                                  "asn-huge-integer", "too-many-nodes"])
def test_hostile_files_use_little_memory(case: str) -> None:
    tracemalloc.start()
    try:
        report = load_file(BAD / f"{case}.yaml")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert not report.ok
    assert peak < 32 * 2**20, f"{case}: {peak} bytes at the peak"


@pytest.mark.parametrize("name", ["lo", "all", "default", "gre0", "sit0", "tunl0", "ip6tnl0"])
def test_names_the_kernel_has_in_a_namespace_are_refused_for_nodes(name: str) -> None:
    text = MINIMAL.replace("s2", name)
    messages = _messages(text)
    assert any(f"'{name}' is reserved inside a namespace" in m for m in messages), messages


@pytest.mark.parametrize(("extra", "words"), [
    ("bgp: {keepalive_time: yes}", "not a boolean"),
    ("bgp: {hold_time: \"9\"}", "not the string '9'"),
    ("bgp: {ecmp: 1}", "expected true or false"),
])
def test_numbers_and_switches_are_taken_as_written(extra: str, words: str) -> None:
    messages = _messages(MINIMAL + extra + "\n")
    assert any(words in m for m in messages), messages


def test_a_loss_of_yes_is_not_one_percent() -> None:
    text = MINIMAL.replace("  - endpoints: [r1, r2]",
                           "  - endpoints: [r1, r2]\n    impair: {loss: yes}")
    assert any("links[0].impair.loss: expected a number, not a boolean" in m
               for m in _messages(text)), _messages(text)
