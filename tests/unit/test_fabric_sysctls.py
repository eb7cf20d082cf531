"""Each router hashes multipath flows with its own seed when the kernel allows it, an L4
hash over the 5-tuple at every router (not the hash the packet carries)."""

from __future__ import annotations

from lab.host.fabric import sysctls_for

SEED = "net.ipv4.fib_multipath_hash_seed"


def test_routers_get_their_own_fixed_seed(default_plan) -> None:
    routers = default_plan.by_role("router")
    seeds = {r.name: sysctls_for(r, "l4", own_hash_seed=True)[SEED] for r in routers}
    assert len(set(seeds.values())) == len(routers)  # distinct
    assert all(int(v) > 0 for v in seeds.values())  # 0 would mean the kernel's shared one
    again = {r.name: sysctls_for(r, "l4", own_hash_seed=True)[SEED] for r in routers}
    assert again == seeds  # the same on every run


def test_no_seed_where_the_kernel_has_none_or_for_hosts(default_plan) -> None:
    for node in default_plan.nodes.values():
        assert SEED not in sysctls_for(node, "l4")
        if node.role != "router":
            assert SEED not in sysctls_for(node, "l4", own_hash_seed=True)


def test_an_l4_hash_is_computed_at_each_router(default_plan) -> None:
    router = default_plan.by_role("router")[0]
    own = sysctls_for(router, "l4", own_hash_seed=True)
    assert own["net.ipv4.fib_multipath_hash_policy"] == "3"
    assert own["net.ipv6.fib_multipath_hash_policy"] == "3"
    assert own["net.ipv4.fib_multipath_hash_fields"] == "0x0037"
    assert own["net.ipv6.fib_multipath_hash_fields"] == "0x0037"
    assert sysctls_for(router, "l4")["net.ipv4.fib_multipath_hash_policy"] == "1"
    l3 = sysctls_for(router, "l3", own_hash_seed=True)
    assert l3["net.ipv4.fib_multipath_hash_policy"] == "0"
    assert "net.ipv4.fib_multipath_hash_fields" not in l3
