"""The DNS check's wire format: one question built once, the answer parsed only as far as
the check needs it (pure; no I/O).

`build_query(qname, qtype)` is a standard query (RD set, no EDNS) with id 0; a run puts
its own random id in the first two bytes. `parse_answer(data, query)` returns the answer's
rcode, its addresses of the asked type (class IN) and whether it was truncated -- or None
when the datagram is not a well-formed answer to exactly that query (another id, not a
response, another question, cut short). Names in the answer are skipped, not decoded:
compression pointers are followed only as far as knowing where a name ends.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

QTYPES = {"A": (1, socket.AF_INET, 4), "AAAA": (28, socket.AF_INET6, 16)}
CLASS_IN = 1
HEADER = 12
RD = 0x0100
QR = 0x8000
TC = 0x0200
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP",
          5: "REFUSED", 6: "YXDOMAIN", 7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH",
          10: "NOTZONE"}


@dataclass(frozen=True)
class Query:
    wire: bytes  # the whole query with id 0
    question: bytes  # its question section, lower-cased (compared case-insensitively)
    rdtype: int
    family: int
    rdlen: int


@dataclass(frozen=True)
class Answer:
    rcode: int
    addresses: frozenset[str]
    truncated: bool

    @property
    def rcode_text(self) -> str:
        return RCODES.get(self.rcode, str(self.rcode))


def encode_name(qname: str) -> bytes:
    """A domain name in wire form (ValueError if a label is empty or too long)."""
    labels = qname.rstrip(".").split(".") if qname.strip(".") else []
    out = bytearray()
    for label in labels:
        raw = label.encode("idna") if not label.isascii() else label.encode("ascii")
        if not 0 < len(raw) < 64:
            raise ValueError(f"bad label {label!r} in {qname!r}")
        out += bytes([len(raw)]) + raw
    out += b"\0"
    if len(out) > 255:
        raise ValueError(f"name too long: {qname!r}")
    return bytes(out)


def build_query(qname: str, qtype: str) -> Query:
    rdtype, family, rdlen = QTYPES[qtype]
    question = encode_name(qname) + rdtype.to_bytes(2, "big") + CLASS_IN.to_bytes(2, "big")
    header = (0).to_bytes(2, "big") + RD.to_bytes(2, "big") + b"\0\x01" + b"\0" * 6
    return Query(header + question, question.lower(), rdtype, family, rdlen)


def _skip_name(data: bytes, at: int) -> int:
    """The offset just after the name at `at` (IndexError/ValueError if malformed)."""
    for _ in range(128):  # a name has at most 127 labels
        length = data[at]
        if length == 0:
            return at + 1
        if length & 0xC0 == 0xC0:  # a compression pointer ends the name here
            if at + 1 >= len(data):
                raise IndexError("cut in a pointer")
            return at + 2
        if length & 0xC0:
            raise ValueError("unknown label type")
        at += 1 + length
    raise ValueError("name too long")


def parse_answer(data: bytes, query: Query, qid: int) -> Answer | None:
    """The answer to `query` sent with id `qid`, or None if `data` is not one."""
    if len(data) < HEADER + len(query.question):
        return None
    if int.from_bytes(data[0:2], "big") != qid:
        return None
    flags = int.from_bytes(data[2:4], "big")
    if not flags & QR or (flags >> 11) & 0xF != 0:  # not a response, or not a QUERY
        return None
    qdcount = int.from_bytes(data[4:6], "big")
    ancount = int.from_bytes(data[6:8], "big")
    end = HEADER + len(query.question)
    if qdcount != 1 or data[HEADER:end].lower() != query.question:
        return None
    found = set()
    at = end
    try:
        for _ in range(ancount):
            at = _skip_name(data, at)
            if at + 10 > len(data):
                return None
            rtype = int.from_bytes(data[at:at + 2], "big")
            rclass = int.from_bytes(data[at + 2:at + 4], "big")
            rdlen = int.from_bytes(data[at + 8:at + 10], "big")
            at += 10
            if at + rdlen > len(data):
                return None
            if rtype == query.rdtype and rclass == CLASS_IN and rdlen == query.rdlen:
                found.add(socket.inet_ntop(query.family, data[at:at + rdlen]))
            at += rdlen
    except (IndexError, ValueError):
        return None
    return Answer(flags & 0xF, frozenset(found), bool(flags & TC))
