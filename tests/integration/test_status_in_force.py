"""`status` (the human table) on a real lab lists what is in force: a fault made with
`fail` and a run-time impairment made with `impair`, a line each with where, what, since
and what ends it;
`heal` and `impair --clear` take them off again."""

from __future__ import annotations

from lab.host.fabric import netem_available

from .helpers import lab_cli

LINK = "r-eu--r-us"


def _status(lab) -> str:
    result = lab_cli("status", "--lab", lab.name, timeout=60)
    return result.stdout


def test_status_lists_the_fault_and_the_impairment_in_force(make_lab):
    lab = make_lab(prefix="sf").up()
    assert "fault:" not in _status(lab)
    lab_cli("fail", "ams", "introspect", "--lab", lab.name, timeout=60, check=True)
    done = lab_cli("impair", LINK, "--loss", "5", "--lab", lab.name, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    text = _status(lab)
    lines = text.splitlines()
    fault = [line for line in lines if line.startswith("fault: introspect at ams since ")]
    assert fault and "until `anycast-lab heal ams" in fault[0], text
    mechanism = "netem" if netem_available() else "nftables"
    impaired = [line for line in lines if line.startswith(f"impairment: {LINK} ")]
    assert impaired and f"loss 5 % ({mechanism}) since " in impaired[0], text
    lab_cli("impair", LINK, "--clear", "--lab", lab.name, timeout=60, check=True)
    lab_cli("heal", "ams", "--lab", lab.name, timeout=60, check=True)
    text = _status(lab)
    assert "fault:" not in text and "impairment:" not in text, text
