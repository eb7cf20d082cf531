"""Fixtures more than one unit test module uses: the test PKI, the introspection services
built on it, a signing key, and the speaker shim with the test playing ExaBGP. The plain
helpers they are made of (free_port, wait_until, DnsServer, FakeExaBGP, ...) are in
helpers.py. Unit tests need no root; each has the timeout set in pyproject.toml."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.model import load_file
from lab.model.plan import AddressPlan, build_plan
from lab.shared.pki import create_signing_key

from .helpers import FakeExaBGP, make_pki, start_introspect, start_shim, stop_process


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """make_pki's material in a directory of its own: {"dir", "active", "revoked"}."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def services(pki: dict[str, Any], tmp_path_factory: pytest.TempPathFactory,
             ) -> Iterator[dict[str, int]]:
    """Two introspection services, by port: "good" with the real revocation list, "stale"
    with a list that lost the revoked canary."""
    tmp = tmp_path_factory.mktemp("introspect")
    procs = {name: start_introspect(pki, f"{name}.json" if name == "stale" else
                                    "revoked.json", tmp)
             for name in ("good", "stale")}
    yield {name: port for name, (_, port) in procs.items()}
    for proc, _ in procs.values():
        stop_process(proc, signal.SIGTERM)


@pytest.fixture(scope="module")
def signing_key() -> bytes:
    return create_signing_key()


@pytest.fixture
def shim(tmp_path: Path) -> Iterator[tuple[FakeExaBGP, Path]]:
    """The shim with a 200 ms watchdog and its control socket, stopped afterwards."""
    fake, sock = start_shim(tmp_path, "--watchdog-ms", "200")
    yield fake, sock
    fake.close()


DEFAULT_TOPOLOGY = Path(__file__).resolve().parents[2] / "topologies" / "default.yaml"


@pytest.fixture(scope="session")
def default_plan() -> AddressPlan:
    """The address plan of the shipped default topology (pure: no lab is built)."""
    report = load_file(DEFAULT_TOPOLOGY)
    assert report.topology is not None, report.problems
    return build_plan(report.topology)
