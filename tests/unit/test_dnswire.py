"""The health check's DNS wire format: the query it builds, and the answers it accepts or
refuses, checked against dnspython's encoder and decoder."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rrset
import pytest

from lab.sites.health.dnswire import build_query, encode_name, parse_answer

QNAME = "health.anycast.lab."


def response(qid: int, qtype: str = "A", addresses: tuple[str, ...] = ("203.0.113.53",),
             rcode: int = dns.rcode.NOERROR, qname: str = QNAME) -> dns.message.Message:
    query = dns.message.make_query(qname, qtype)
    query.id = qid
    answer = dns.message.make_response(query)
    answer.set_rcode(rcode)
    if addresses:
        answer.answer.append(dns.rrset.from_text(qname, 30, "IN", qtype, *addresses))
    return answer


def test_the_query_is_what_dnspython_reads_as_that_question() -> None:
    query = build_query(QNAME, "AAAA")
    parsed = dns.message.from_wire(b"\x12\x34" + query.wire[2:])
    assert parsed.id == 0x1234 and parsed.flags & dns.flags.RD
    assert parsed.question[0].name == dns.name.from_text(QNAME)
    assert parsed.question[0].rdtype == 28 and not parsed.answer


def test_a_good_answer_gives_its_addresses() -> None:
    query = build_query(QNAME, "A")
    wire = response(77, addresses=("203.0.113.53", "198.51.100.7")).to_wire()
    answer = parse_answer(wire, query, 77)
    assert answer is not None
    assert answer.rcode == 0 and not answer.truncated
    assert answer.addresses == {"203.0.113.53", "198.51.100.7"}


def test_aaaa_answers_are_normalised_like_the_config() -> None:
    query = build_query(QNAME, "AAAA")
    wire = response(5, "AAAA", ("2001:DB8:53:0::53",)).to_wire()
    answer = parse_answer(wire, query, 5)
    assert answer is not None and answer.addresses == {"2001:db8:53::53"}


def test_a_case_changed_question_is_still_the_same_question() -> None:
    query = build_query(QNAME, "A")
    answer = parse_answer(response(9, qname="HEALTH.anycast.LAB.").to_wire(), query, 9)
    assert answer is not None and answer.addresses == {"203.0.113.53"}


def test_another_id_is_not_the_answer() -> None:
    query = build_query(QNAME, "A")
    assert parse_answer(response(1000).to_wire(), query, 1001) is None


def test_another_question_is_not_the_answer() -> None:
    query = build_query(QNAME, "A")
    assert parse_answer(response(3, qname="other.anycast.lab.").to_wire(), query, 3) is None
    assert parse_answer(response(3, "AAAA", ("2001:db8::1",)).to_wire(), query, 3) is None


def test_a_query_is_not_an_answer() -> None:
    query = build_query(QNAME, "A")
    assert parse_answer(b"\x00\x07" + query.wire[2:], query, 7) is None


@pytest.mark.parametrize("cut", [0, 5, 12, 20, 33, 40, -1])
def test_a_datagram_cut_short_is_not_an_answer(cut: int) -> None:
    query = build_query(QNAME, "A")
    wire = response(11).to_wire()
    assert parse_answer(wire[:cut], query, 11) is None


def test_servfail_is_an_answer_with_its_rcode() -> None:
    query = build_query(QNAME, "A")
    answer = parse_answer(response(4, addresses=(), rcode=dns.rcode.SERVFAIL).to_wire(),
                          query, 4)
    assert answer is not None and answer.rcode_text == "SERVFAIL" and not answer.addresses


def test_the_truncation_flag_is_reported() -> None:
    query = build_query(QNAME, "A")
    message = response(8, addresses=())
    message.flags |= dns.flags.TC
    answer = parse_answer(message.to_wire(), query, 8)
    assert answer is not None and answer.truncated and not answer.addresses


def test_records_of_other_types_are_not_addresses() -> None:
    query = build_query(QNAME, "A")
    message = response(6)
    message.answer.insert(0, dns.rrset.from_text(QNAME, 30, "IN", "TXT", '"hello"'))
    answer = parse_answer(message.to_wire(), query, 6)
    assert answer is not None and answer.addresses == {"203.0.113.53"}


def test_names_are_encoded_and_bad_ones_refused() -> None:
    assert encode_name("a.bc.") == b"\x01a\x02bc\x00" == encode_name("a.bc")
    assert encode_name(".") == b"\x00"
    with pytest.raises(ValueError):
        encode_name("a..b.")
    with pytest.raises(ValueError):
        encode_name("x" * 64 + ".lab.")
