"""The YAML reader of topology files: bounded work, and YAML 1.2 numbers.

A topology file is small and written by hand, so the reader refuses what no topology
needs and what could make reading it expensive, each with the line where it is found
(`Refused`, a `yaml.YAMLError`):

- aliases (`*name`): refused where they appear, never expanded (nine nested aliases
  of nine items each in a few hundred bytes expand to 9^9 nodes); anchors alone are
  harmless and allowed;
- nesting deeper than MAX_DEPTH collections (a topology needs 4: the file, `links`, a
  link, its `impair`), and more than MAX_NODES nodes in all, both checked while the file
  is read, so neither recursion nor time grows with a hostile file;
- integers of more than MAX_INT_DIGITS digits.

Scalars follow YAML 1.2's core schema for numbers: `1:2:3` is a string (YAML 1.1 read
it as the base-60 number 3723), `0777` is 777 (1.1: octal 511), `0o17` octal, `0x1f`
hex, no `_` separators. Dates are strings (no timestamps). Booleans and null stay as
PyYAML reads them (`yes`/`no`/`on`/`off` are booleans), so that a node named `no` is
reported as "YAML reads no as the boolean false" rather than silently accepted by one
YAML reader and not another.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import BaseResolver
from yaml.scanner import Scanner

# Bounds (docs/topologies.md says why each is what it is).
MAX_FILE_BYTES = 256 * 1024
MAX_DEPTH = 10
MAX_NODES = 20_000
MAX_INT_DIGITS = 20

INT_TAG = "tag:yaml.org,2002:int"
FLOAT_TAG = "tag:yaml.org,2002:float"
BOOL_TAG = "tag:yaml.org,2002:bool"
NULL_TAG = "tag:yaml.org,2002:null"

INT_RE = re.compile(r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+")
FLOAT_RE = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
                      r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)")
BOOL_RE = re.compile(r"yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE"
                     r"|on|On|ON|off|Off|OFF")
NULL_RE = re.compile(r"~|null|Null|NULL|")

Path = tuple[Any, ...]


class Refused(yaml.YAMLError):
    """YAML the reader will not read: one sentence, its line, and the path where it is."""

    def __init__(self, message: str, mark: yaml.Mark | None, path: Path) -> None:
        super().__init__(message)
        self.message = message
        self.line = mark.line + 1 if mark is not None else None
        self.path = path


def _anchored(pattern: re.Pattern[str]) -> re.Pattern[str]:
    """The pattern matching whole values only (PyYAML's resolver calls `.match`)."""
    return re.compile(rf"(?:{pattern.pattern})\Z")


class _Resolver(BaseResolver):
    """YAML 1.2 core numbers; PyYAML's booleans, null and merge keys; nothing else."""


_Resolver.add_implicit_resolver(BOOL_TAG, _anchored(BOOL_RE), list("yYnNtTfFoO"))
_Resolver.add_implicit_resolver(INT_TAG, _anchored(INT_RE), list("-+0123456789"))
_Resolver.add_implicit_resolver(FLOAT_TAG, _anchored(FLOAT_RE), list("-+0123456789."))
_Resolver.add_implicit_resolver(NULL_TAG, _anchored(NULL_RE), ["~", "n", "N", ""])
_Resolver.add_implicit_resolver("tag:yaml.org,2002:merge", re.compile(r"<<\Z"), ["<"])


def _digits(text: str) -> int:
    """How many digits an integer scalar has (sign and 0o/0x prefix not counted)."""
    text = text.lstrip("+-")
    return len(text) - 2 if text[:2] in ("0o", "0x") else len(text)


class _Composer(Composer):
    """PyYAML's composer with the bounds above, knowing the path of every node."""

    def __init__(self) -> None:
        super().__init__()
        self._path: list[Any] = []
        self._depth = 0
        self._nodes = 0
        self._open: set[str] = set()  # anchors of the collections being composed

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        part: list[Any] = []
        if isinstance(parent, yaml.SequenceNode):
            part = [index]
        elif isinstance(parent, yaml.MappingNode) and isinstance(index, yaml.Node):
            part = [index.value if isinstance(index, yaml.ScalarNode) else "<complex key>"]
        path = (*self._path, *part)
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            how = ("it refers to a node that contains it, which would never end"
                   if event.anchor in self._open else
                   "an alias can expand to far more than the file holds")
            raise Refused(f"YAML aliases are not allowed in a topology file (*{event.anchor}): "
                          f"write the value out; {how}", event.start_mark, path)
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise Refused(f"the file has more than {MAX_NODES} YAML nodes (keys, values "
                          "and items); the largest lab allowed needs about 11000",
                          event.start_mark, path)
        collection = isinstance(event, yaml.CollectionStartEvent)
        if collection:
            if self._depth >= MAX_DEPTH:
                raise Refused(f"nested more than {MAX_DEPTH} levels deep; a topology needs "
                              "at most 4 (the file, links, a link, its impair)",
                              event.start_mark, path)
            self._depth += 1
            if event.anchor is not None:
                self._open.add(event.anchor)
        self._path = list(path)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._path = list(path[:len(path) - len(part)])
            if collection:
                self._depth -= 1
                self._open.discard(event.anchor)
        if isinstance(node, yaml.ScalarNode) and node.tag == INT_TAG \
                and _digits(node.value) > MAX_INT_DIGITS:
            raise Refused(f"a {_digits(node.value)}-digit number is too large: numbers in a "
                          f"topology have at most {MAX_INT_DIGITS} digits (an AS number has "
                          "at most 10)", node.start_mark, path)
        return node


class _Constructor(SafeConstructor):
    """SafeConstructor with YAML 1.2 numbers; every bad scalar is a ConstructorError."""

    def construct_yaml_int(self, node: yaml.Node) -> int:
        text = str(self.construct_scalar(node))
        if not INT_RE.fullmatch(text) or _digits(text) > MAX_INT_DIGITS:
            raise ConstructorError(None, None, f"{text!r} is not a YAML 1.2 integer of at "
                                   f"most {MAX_INT_DIGITS} digits", node.start_mark)
        sign = -1 if text.startswith("-") else 1
        body = text.lstrip("+-")
        if body.startswith("0o"):
            return sign * int(body[2:], 8)
        if body.startswith("0x"):
            return sign * int(body[2:], 16)
        return sign * int(body, 10)

    def construct_yaml_float(self, node: yaml.Node) -> float:
        text = str(self.construct_scalar(node))
        if not FLOAT_RE.fullmatch(text):
            raise ConstructorError(None, None, f"{text!r} is not a YAML 1.2 number",
                                   node.start_mark)
        lowered = text.lower()
        if lowered.endswith(".inf"):
            return float("-inf") if text.startswith("-") else float("inf")
        if lowered == ".nan":
            return float("nan")
        return float(text)

    def construct_yaml_bool(self, node: yaml.Node) -> bool:
        text = str(self.construct_scalar(node))
        if not BOOL_RE.fullmatch(text):
            raise ConstructorError(None, None, f"{text!r} is not a boolean", node.start_mark)
        return self.bool_values[text.lower()]


_Constructor.add_constructor(INT_TAG, _Constructor.construct_yaml_int)
_Constructor.add_constructor(FLOAT_TAG, _Constructor.construct_yaml_float)
_Constructor.add_constructor(BOOL_TAG, _Constructor.construct_yaml_bool)
_Constructor.add_constructor("tag:yaml.org,2002:timestamp", _Constructor.construct_undefined)


class TopologyLoader(Reader, Scanner, Parser, _Composer, _Constructor, _Resolver):
    """The loader: PyYAML's reader, scanner and parser; the bounded composer; YAML 1.2
    numbers."""

    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        _Composer.__init__(self)
        _Constructor.__init__(self)
        _Resolver.__init__(self)


def compose(text: str) -> yaml.Node | None:
    """The node tree of a single-document file (None if it holds no document).

    Raises yaml.YAMLError: a syntax error, or Refused."""
    loader = TopologyLoader(text)
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


def construct(node: yaml.Node) -> Any:
    """The Python value of a composed node tree; raises yaml.YAMLError."""
    loader = TopologyLoader("")
    try:
        return loader.construct_document(node)
    finally:
        loader.dispose()


def safe_load(text: str) -> Any:
    """The value of a topology file's text, read as `load_text` reads it."""
    root = compose(text)
    return None if root is None else construct(root)
