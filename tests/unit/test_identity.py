"""The id.server question and its answer, as the prober and `status` read them."""

from __future__ import annotations

import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from lab.shared.dnsid import identity_query, site_from_response
from probes.dns import _site_of


def _answer(*sites: str, rcode: int = dns.rcode.NOERROR) -> dns.message.Message:
    query = identity_query()
    response = dns.message.make_response(query)
    response.set_rcode(rcode)
    if sites:
        response.answer.append(dns.rrset.from_text("id.server.", 0, "CH", "TXT",
                                                   *(f'"{s}"' for s in sites)))
    return response


def test_the_question_is_id_server_ch_txt() -> None:
    question = identity_query().question[0]
    assert (question.name.to_text(), question.rdclass, question.rdtype) == (
        "id.server.", dns.rdataclass.CH, dns.rdatatype.TXT)


def test_the_site_is_the_first_txt_string() -> None:
    assert site_from_response(_answer("ams")) == "ams"
    assert site_from_response(_answer()) is None


def test_the_prober_reads_the_same_answer() -> None:
    response = _answer("nyc")
    assert _site_of(response.to_wire()) == (response.id, "nyc", None)
    empty = _answer()
    assert _site_of(empty.to_wire()) == (empty.id, None, "empty answer")
    refused = _answer(rcode=dns.rcode.REFUSED)
    assert _site_of(refused.to_wire()) == (refused.id, None, "rcode REFUSED")
