"""A generated 25-site lab behaves like the default one: it comes up and converges, one
site's DNS fault withdraws that site only (its client moves, every other site stays
announced), healing brings the client back, and teardown leaves nothing."""

from __future__ import annotations

import json

import yaml

from lab.model.generate import generate_topology

from .helpers import lab_cli, leftovers, wait_for

SITES = 25


def status(name: str) -> dict:
    result = lab_cli("status", "--lab", name, "--json", timeout=120)
    return json.loads(result.stdout)


def test_a_25_site_lab_fails_and_heals_one_site(make_lab, tmp_path):
    handle = make_lab(prefix="sc")
    path = tmp_path / "gen25.yaml"
    path.write_text(yaml.safe_dump(generate_topology(handle.name, SITES, 3)))
    handle.topology = path
    lab = handle.up(timeout=600)
    sites = [n.name for n in lab.plan.by_role("site")]
    assert len(sites) == SITES
    first = status(handle.name)
    assert first["ok"], first["problems"]
    client = first["clients"]["c1"]
    target = client["expected"]
    assert client["site"] == client["site6"] == target

    assert lab_cli("fail", target, "dns", "--lab", handle.name).returncode == 0
    moved = wait_for(lambda: (s := status(handle.name))["clients"]["c1"]["site"] not in
                     (None, target) and s, timeout=60, interval=0.5,
                     message=f"c1 answered elsewhere than {target}")
    assert not moved["sites"][target]["announced"]
    assert "dns" in moved["sites"][target]["reason"]
    others = [s for s in sites if s != target]
    assert all(moved["sites"][s]["announced"] for s in others)

    assert lab_cli("heal", target, "--lab", handle.name, timeout=120).returncode == 0
    wait_for(lambda: status(handle.name)["clients"]["c1"]["site"] == target, timeout=60,
             interval=0.5, message=f"c1 back at {target}")

    down = lab_cli("down", "--lab", handle.name, "--json", timeout=300)
    assert down.returncode == 0, down.stdout + down.stderr
    assert leftovers(handle.name, handle.dir) == {"namespaces": [], "processes": [],
                                                  "run_dir": False}
