"""Human output that a pipe, a log or a test capture gets whole: no line wrapped at 80
columns, no table cell cut short, the full token id `token revoke` needs; and revoking a
token twice changes nothing the second time. No root: the lab here is a run directory
(journal, state, topology copy) and the revocation files `token revoke` writes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from lab.cli import main as cli
from lab.cli import ui
from lab.cli.main import app
from lab.host.journal import Journal
from lab.model import load_file
from lab.model.names import TOPOLOGY_COPY
from lab.model.plan import build_plan
from lab.ops import tokenstore
from lab.render.credentials import paths
from lab.render.introspect import revocation_path
from lab.render.launch import node_dir

REPO = Path(__file__).resolve().parents[2]
TWO_SITES = REPO / "topologies" / "two-sites.yaml"
JTI = "0123456789abcdef0123456789abcdef"
NARROW = {"COLUMNS": "80"}


@pytest.fixture
def lab_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A run directory holding lab 'out' (two sites, west and east) as `up` leaves it,
    with one issued token on record."""
    monkeypatch.setenv("ANYCAST_LAB_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.delenv("ANYCAST_LAB", raising=False)
    topo = load_file(TWO_SITES).topology
    assert topo is not None
    topo = topo.model_copy(update={"name": "out"})
    journal = Journal("out")
    journal.open()
    journal.set_state(phase="up")
    (journal.dir / TOPOLOGY_COPY).write_text(
        yaml.safe_dump(topo.model_dump(mode="json"), sort_keys=False))
    store = paths(journal.dir).tokens
    store.parent.mkdir(parents=True, exist_ok=True)
    now = int(time.time())
    store.write_text(json.dumps({
        "jti": JTI, "sub": "a-rather-long-subject-name", "client_id": "lab-admin-client",
        "scope": "read introspect revoke admin", "iat": now, "exp": now + 3600}) + "\n")
    return journal.dir


def invoke(*argv: str) -> tuple[int, str]:
    cli._register()
    result = CliRunner().invoke(app, list(argv), env=NARROW)
    return result.exit_code, result.stdout


def test_token_list_shows_the_whole_jti_on_one_line_at_80_columns(lab_dir: Path) -> None:
    code, text = invoke("token", "list", "--lab", "out")
    assert code == 0, text
    assert "…" not in text
    line = next(line for line in text.splitlines() if JTI[:8] in line)
    assert JTI in line, text
    for whole in ("a-rather-long-subject-name", "lab-admin-client",
                  "read introspect revoke admin"):
        assert whole in text, text


def test_a_long_sentence_is_not_wrapped_when_not_a_terminal(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    sentence = ("west: draining: re-announced with GRACEFUL_SHUTDOWN (65535:0), withdrawal in "
                "2000 ms")
    assert len(sentence) > 80
    ui.out.print(sentence, markup=False, highlight=False)
    ui.err.print(sentence, markup=False, highlight=False)
    captured = capsys.readouterr()
    assert captured.out == sentence + "\n"
    assert captured.err == sentence + "\n"


def test_a_wide_table_keeps_every_cell_whole_when_not_a_terminal(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    cells = ["Established", "dns:down introspect:up", "withdrawal in 2000 ms",
             "r-d > r-a > a1", "2001:db8:53::53/128", "fd00:a11c:ab:1::2"]
    ui.out.print(ui.table("t", [f"column {i}" for i in range(len(cells))], [cells]))
    text = capsys.readouterr().out
    assert "…" not in text
    row = next(line for line in text.splitlines() if "Established" in line)
    for cell in cells:
        assert cell in row, text


def test_on_a_narrow_terminal_a_copyable_column_is_never_wrapped_or_cut() -> None:
    import io
    console = ui._Console(file=io.StringIO(), force_terminal=True, width=80,
                          color_system=None)
    console.print(ui.table("tokens", ["jti", "client", "scope"],
                           [[JTI, "a-client-with-a-long-name " * 3, "read write " * 4]],
                           copyable=("jti",)))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "…" not in text
    assert any(JTI in line for line in text.splitlines()), text
    assert max(len(line) for line in text.splitlines()) <= 80


def _versions(lab: Path) -> dict[str, int]:
    return {site: json.loads(revocation_path(node_dir(lab, site)).read_text())["version"]
            for site in ("west", "east")}


def test_revoking_twice_changes_no_site_the_second_time(lab_dir: Path) -> None:
    plan = build_plan(load_file(TWO_SITES).topology)  # type: ignore[arg-type]
    first, already = tokenstore.revoke_sites(lab_dir, plan, JTI)
    assert first == {"west": 1, "east": 1} and already == []
    files = {s: revocation_path(node_dir(lab_dir, s)).read_bytes() for s in first}
    again, already = tokenstore.revoke_sites(lab_dir, plan, JTI)
    assert again == first and already == ["west", "east"]
    assert {s: revocation_path(node_dir(lab_dir, s)).read_bytes() for s in first} == files
    assert tokenstore.revoke_text(JTI, again, already) == (
        f"{JTI} was already revoked on all 2 sites; nothing changed (west v1, east v1)")


def test_a_site_that_missed_a_revocation_gets_it_and_only_it_is_bumped(lab_dir: Path) -> None:
    plan = build_plan(load_file(TWO_SITES).topology)  # type: ignore[arg-type]
    tokenstore.revoke_sites(lab_dir, plan, JTI)
    revocation_path(node_dir(lab_dir, "east")).unlink()  # east lost its list
    versions, already = tokenstore.revoke_sites(lab_dir, plan, JTI)
    assert versions == {"west": 1, "east": 1} and already == ["west"]
    assert tokenstore.revoke_text(JTI, versions, already) == (
        f"revoked {JTI} on 1 site: east v1; already revoked on west v1 (unchanged)")


def test_token_revoke_twice_through_the_cli_says_already_revoked(lab_dir: Path) -> None:
    code, text = invoke("token", "revoke", JTI, "--lab", "out", "--json")
    assert code == 0, text
    assert json.loads(text) == {"jti": JTI, "versions": {"west": 1, "east": 1},
                                "already_revoked": False, "already_revoked_on": []}
    code, text = invoke("token", "revoke", JTI, "--lab", "out", "--json")
    assert code == 0, text
    assert json.loads(text) == {"jti": JTI, "versions": {"west": 1, "east": 1},
                                "already_revoked": True,
                                "already_revoked_on": ["west", "east"]}
    code, text = invoke("token", "revoke", JTI, "--lab", "out")
    assert code == 0, text
    assert text.strip() == (f"{JTI} was already revoked on all 2 sites; nothing changed "
                            "(west v1, east v1)")
    assert _versions(lab_dir) == {"west": 1, "east": 1}
    code, text = invoke("token", "list", "--lab", "out")
    assert code == 0 and "west, east" in text, text
