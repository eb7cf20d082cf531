"""Two labs up at once on one machine: `ANYCAST_LAB` picks the lab for every README
command, `list --json` shows both, hints name `--lab`, `down --lab` of a lab that is not
up says so and lists those that are, and `make lab-down` of one (the lab its topology
names) leaves the other running. Real labs, unique names, always torn down; no command
here touches a lab it did not make (never `down --all`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lab.host.journal import lab_dir
from lab.render import credentials

from .helpers import DEFAULT, ROOT, leftovers, nothing_left, unique_name


def cli(*args: str, lab: str | None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """The CLI with ANYCAST_LAB set to `lab` (or unset), as a user's shell would run it."""
    env = {k: v for k, v in os.environ.items() if k != "ANYCAST_LAB"}
    if lab is not None:
        env["ANYCAST_LAB"] = lab
    return subprocess.run([sys.executable, "-m", "lab", *args], capture_output=True,
                          text=True, timeout=timeout, check=False, cwd=ROOT, env=env)


def named_copy(directory: Path, name: str) -> Path:
    data = yaml.safe_load(DEFAULT.read_text())
    data["name"] = name
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def two_labs(make_lab, tmp_path):
    """Two default labs, each built from a copy of the default topology that names it."""
    handles = []
    for prefix in ("ma", "mb"):
        handle = make_lab(DEFAULT, prefix=prefix)
        handle.topology = named_copy(tmp_path, handle.name)
        handles.append(handle)
    for handle in handles:
        handle.up()
    return handles


def test_readme_commands_work_with_anycast_lab(two_labs, tmp_path) -> None:
    a, b = two_labs
    # Without a lab named, a command cannot choose, and says how to.
    ambiguous = cli("status", lab=None)
    assert ambiguous.returncode == 2
    assert "choose one with --lab NAME or ANYCAST_LAB=NAME" in ambiguous.stderr

    status = cli("status", "--json", lab=a.name)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["lab"] == a.name
    human = cli("status", lab=a.name)
    assert human.returncode == 0 and f"lab {a.name} (up)" in human.stdout

    dig = cli("exec", "c-eu", "--", "dig", "@203.0.113.53", "id.server", "CH", "TXT", "+short",
              lab=a.name)
    assert dig.returncode == 0 and dig.stdout.strip() == '"ams"', dig.stdout + dig.stderr

    failed = cli("fail", "ams", "dns-hang", lab=a.name)
    assert failed.returncode == 0, failed.stderr
    again = cli("fail", "ams", "dns-hang", lab=a.name)
    assert again.returncode == 1
    assert f"`anycast-lab heal ams dns-hang --lab {a.name}` first" in again.stderr
    healed = cli("heal", "ams", lab=a.name)
    assert healed.returncode == 0, healed.stderr

    png = tmp_path / "failover.png"
    measured = cli("measure", "failover", "--site", "ams", "--fault", "dns-hang", "--trials",
                   "1", "--plot", str(png), "--json", lab=a.name, timeout=300)
    assert measured.returncode == 0, measured.stderr[-2000:]
    assert json.loads(measured.stdout)["summary"]["affected_client_trials"] == 1
    assert png.stat().st_size > 0

    token = cli("token", "issue", "--client", "lab-admin", "--scope", "dns:read", lab=a.name)
    assert token.returncode == 0, token.stderr
    paths = credentials.paths(lab_dir(a.name))
    secret = credentials.client_secret(lab_dir(a.name), "lab-admin")
    curl = cli("exec", "c-eu", "--", "curl", "-s", "--cacert", str(paths.ca_cert), "-u",
               f"lab-admin:{secret}", "https://203.0.113.53/introspect", "-d",
               f"token={token.stdout.strip()}", lab=a.name)
    assert curl.returncode == 0 and json.loads(curl.stdout)["active"] is True, curl.stdout
    revoked = cli("token", "revoke", token.stdout.strip(), "--json", lab=a.name)
    assert revoked.returncode == 0 and set(json.loads(revoked.stdout)["versions"]) == {
        "ams", "nyc", "sin"}

    drained = cli("drain", "ams", "--json", lab=a.name)
    assert drained.returncode == 0 and json.loads(drained.stdout)["lab"] == a.name
    undrained = cli("undrain", "ams", "--json", lab=a.name)
    assert undrained.returncode == 0 and json.loads(undrained.stdout)["was_drained"] is True

    # Lab b saw none of it.
    other = cli("token", "list", "--json", lab=b.name)
    assert other.returncode == 0 and json.loads(other.stdout)["tokens"] == []
    assert cli("status", "--json", lab=b.name).returncode == 0


def test_list_shows_both_and_lab_down_of_one_leaves_the_other(two_labs) -> None:
    a, b = two_labs
    listed = cli("list", "--json", lab=None)
    assert listed.returncode == 0, listed.stderr
    entries = {e["name"]: e for e in json.loads(listed.stdout)["labs"]}
    for handle in (a, b):
        entry = entries[handle.name]
        assert entry["phase"] == "up"
        assert entry["topology"] == str(handle.topology)
        assert entry["nodes"] == {"routers": 3, "sites": 3, "clients": 3}
        assert entry["health"]["sites"] == {"up": 3}
        assert entry["health"]["sessions"] == {"established": 15, "total": 15}
        assert entry["age_s"] >= 0
    table = cli("list", lab=None)
    assert table.returncode == 0 and a.name in table.stdout and b.name in table.stdout

    nobody = unique_name("no")
    missing = cli("down", "--lab", nobody, lab=None)
    assert missing.returncode == 0
    line = missing.stdout.replace("\n", " ")
    assert f"nothing to tear down: lab '{nobody}' is not up (labs up: " in line
    assert a.name in line and b.name in line

    # `make lab-down` for lab a's topology file (what `make lab-up TOPOLOGY=...` built).
    venv = Path(sys.executable).parent.parent
    made = subprocess.run(["make", "--no-print-directory", "lab-down", f"VENV={venv}",
                           f"TOPOLOGY={a.topology}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False)
    assert made.returncode == 0, made.stdout + made.stderr
    assert f"lab '{a.name}' down:" in made.stdout
    assert nothing_left(a.name, a.dir), leftovers(a.name, a.dir)
    still = cli("status", "--json", lab=b.name)
    assert still.returncode == 0, still.stderr
    assert json.loads(still.stdout)["ok"] is True
