"""Fuzzing the topology reader: every shipped topology, mutated at random, must come back
as a report (never an exception), each within a per-example deadline.

Two kinds of mutation: on the parsed data (values replaced by other types, garbage
strings, big and odd numbers, bad prefixes, rates and names; keys deleted, renamed or
added; values wrapped in lists or mappings), and on the text itself (YAML syntax
inserted or cut: anchors, aliases, tags, brackets, tabs, huge numbers). A mutant that
validates must also plan, and survive the round trip `up` makes (dump, load again).
"""

from __future__ import annotations

import copy
import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lab.model import Problem, Report, load_text
from lab.model.plan import build_plan
from lab.model.safeyaml import safe_load

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted([*REPO.glob("topologies/*.yaml"), *REPO.glob("tests/topologies/good/*.yaml")])
TEXTS = {p.name: p.read_text() for p in SHIPPED}
DATA = {name: safe_load(text) for name, text in TEXTS.items()}

FUZZ = settings(max_examples=150, deadline=timedelta(seconds=3), database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

NASTY_STRINGS = [
    "", " ", "\n", "r1\n", "\tr1", "r1 ", "a" * 300, "0", "-1", "1:2:3", "0777", "0o17",
    "0x1f", "1_000", "yes", "no", "~", "null", "*a", "&a", "{", "[", "\x00", "\u2028", "é",
    "../../etc", "a/b", "a.b", "r1--r2", "lo", "all", "default", "A", "-r1",
    "224.0.0.0/4", "ff00::/8", "fe80::/10", "127.0.0.0/8", "169.254.0.0/16", "0.0.0.0/0",
    "::/0", "::ffff:1.2.3.4/128", "::1/128", "::5/128", "0.1.2.3/32", "255.255.255.255/32",
    "1.2.3.4/33", "10.0.0.0/31", "fd00::/127", "203.0.113.53/32", "2001:db8:53::53/128",
    "99999999999gbit", "34359738361bit", "1bit", "953bit", "0mbit", "10mbit", "1gbit",
    "9" * 30 + "ms", "1.5s", "-1ms", "0ms", "60s", "61s", "5 ms", "1e3ms",
    "healthd", "exabgp-healthcheck", "l3", "l4",
]
NUMBERS = st.one_of(
    st.integers(-2**70, 2**70), st.sampled_from([0, -1, 1, 3, 2**31, 2**32 - 1, 2**32, 23456,
                                                 65535, 4294967295, 10**20, 10**60]),
    st.floats(allow_nan=True, allow_infinity=True),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, st.text(max_size=40),
                    st.sampled_from(NASTY_STRINGS))
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=3),
                   st.dictionaries(st.one_of(st.text(max_size=8), st.integers(), st.booleans()),
                                   SCALARS, max_size=3))
KEYS = st.one_of(st.text(max_size=20), st.sampled_from(NASTY_STRINGS), st.integers(),
                 st.booleans(), st.none())


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path below the root (mapping keys and list indexes)."""
    found: list[tuple[Any, ...]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            found.append((*path, key))
            found += _paths(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found.append((*path, index))
            found += _paths(value, (*path, index))
    return found


def _parent(data: Any, path: tuple[Any, ...]) -> Any:
    for part in path[:-1]:
        data = data[part]
    return data


@st.composite
def mutated_data(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from(sorted(DATA)))
    data = copy.deepcopy(DATA[name])
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(data)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent, last = _parent(data, path), path[-1]
        op = draw(st.sampled_from(["replace", "delete", "wrap", "stringify", "rename", "add"]))
        if op == "replace":
            parent[last] = draw(VALUES)
        elif op == "delete":
            del parent[last]
        elif op == "wrap":
            parent[last] = draw(st.sampled_from([[parent[last]], {"x": parent[last]}]))
        elif op == "stringify":
            parent[last] = str(parent[last])
        elif op == "rename" and isinstance(parent, dict):
            parent[draw(KEYS)] = parent.pop(last)
        elif op == "add" and isinstance(parent, dict):
            parent[draw(KEYS)] = draw(VALUES)
        elif op == "add" and isinstance(parent, list):
            parent.insert(last, draw(VALUES))
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=draw(st.booleans()))


YAML_BITS = [
    "&a ", "*a", "*b", "&a [*a]", "!!int ", "!!float ", "!!bool ", "!!timestamp ", "!!binary ",
    "!!set ", "!!omap ", "!!python/object:os.system ", "!custom ", "? ", ": ", "- ", "[", "]",
    "{", "}", ",", "\t", "\n", "\r\n", "---\n", "...\n", "<<: ", "'", '"', "\\", "%YAML 1.1\n",
    "#", "|", ">", "9" * 5000, "1:2:3", "0o777", "0x", "2001-13-45", "\x00", "\ufeff", "\x85",
    "[" * 50, "{a: " * 30, "- " * 30,
]
NASTY_VALUES = ["&a [*a]", "&a {b: *a}", "9" * 5000, "-" + "9" * 30, "!!int abc", "!!bool maybe",
                "!!float abc", "!!timestamp 2001-13-45", "2001-13-45", "!!binary ===",
                "!!set {a}", "!!omap [a]", ".nan", ".inf", "-.inf", "1e400", "0b101", "1:2:3",
                '"r1\\n"', "'r1\n'", "99999999999gbit", '"' + "9" * 40 + 'ms"']


# A scalar after "key: " or inside a flow collection: where a value goes.
VALUE_RE = re.compile(r"(?<=: )[^\s{}\[\],#]+|(?<=[\[,] )[^\s{}\[\],#]+")


@st.composite
def mutated_text(draw: st.DrawFn) -> str:
    text = TEXTS[draw(st.sampled_from(sorted(TEXTS)))]
    for _ in range(draw(st.integers(1, 5))):
        pos = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["insert", "delete", "duplicate-line", "value", "value",
                                   "alias"]))
        values = list(VALUE_RE.finditer(text))
        if op in ("value", "alias") and values:
            one, other = draw(st.sampled_from(values)), draw(st.sampled_from(values))
            if op == "value":
                piece = draw(st.one_of(st.sampled_from(YAML_BITS + NASTY_VALUES),
                                       st.text(max_size=12)))
                text = text[:one.start()] + piece + text[one.end():]
            elif one.start() != other.start():
                first, second = sorted((one, other), key=lambda m: m.start())
                text = (text[:first.start()] + f"&x {first.group()}"
                        + text[first.end():second.start()] + "*x" + text[second.end():])
        elif op == "insert":
            piece = draw(st.one_of(st.sampled_from(YAML_BITS), st.text(max_size=12)))
            text = text[:pos] + piece + text[pos:]
        elif op == "delete":
            text = text[:pos] + text[pos + draw(st.integers(1, 40)):]
        else:
            start = text.rfind("\n", 0, pos) + 1
            end = text.find("\n", pos)
            line = text[start:end + 1 if end >= 0 else len(text)]
            text = text[:start] + line * draw(st.integers(2, 3)) + text[start:]
    return text


def _check(report: Report) -> None:
    """A report, in every case: problems that print on one line and JSON that encodes."""
    assert isinstance(report, Report)
    json.dumps(report.to_json())
    for problem in report.problems:
        assert isinstance(problem, Problem)
        assert isinstance(problem.path, str) and isinstance(problem.message, str)
        assert problem.line is None or problem.line >= 1
        assert "\n" not in str(problem)
    if report.ok:
        assert report.topology is not None
        plan = build_plan(report.topology)
        assert set(plan.nodes) == set(report.topology.node_names())
        again = load_text(yaml.safe_dump(report.topology.model_dump(mode="json"),
                                         sort_keys=False), "<copy>")
        assert again.ok, [str(p) for p in again.problems]
    else:
        assert report.problems


def test_the_shipped_topologies_are_the_fuzz_seeds() -> None:
    assert len(SHIPPED) >= 5
    for name, text in TEXTS.items():
        assert load_text(text, name).ok, name


@FUZZ
@given(mutated_data())
def test_mutated_values_always_give_a_report(text: str) -> None:
    _check(load_text(text, "<fuzz>"))


@FUZZ
@given(mutated_text())
def test_mutated_text_always_gives_a_report(text: str) -> None:
    _check(load_text(text, "<fuzz>"))
