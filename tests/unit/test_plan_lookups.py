"""The plan's lookups every layer shares: which node holds an address, which site a name is."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.model.errors import BadInput
from lab.model.plan import AddressPlan, require_site

DEFAULT = Path(__file__).resolve().parents[2] / "topologies" / "default.yaml"


@pytest.fixture(scope="module")
def plan(default_plan: AddressPlan) -> AddressPlan:
    return default_plan


def test_every_interface_address_maps_to_its_node(plan: AddressPlan) -> None:
    by_address = plan.node_by_address()
    interfaces = [(n.name, i) for n in plan.nodes.values() for i in n.interfaces]
    assert len(by_address) == 2 * len(interfaces)  # both families, no address twice
    for name, iface in interfaces:
        assert by_address[str(iface.v4.ip)] == name
        assert by_address[str(iface.v6.ip)] == name
    assert str(plan.anycast4.network_address) not in by_address


def test_require_site_returns_the_site(plan: AddressPlan) -> None:
    node = require_site(plan, "ams")
    assert node.name == "ams" and node.role == "site"


@pytest.mark.parametrize("name", ["nosuch", "r-eu", "c-eu"])  # unknown, a router, a client
def test_require_site_names_the_sites_otherwise(plan: AddressPlan, name: str) -> None:
    with pytest.raises(BadInput) as err:
        require_site(plan, name)
    assert err.value.message == f"unknown site '{name}' (sites: ams, nyc, sin)"
    assert err.value.exit_code == 2
