"""The issuer service and a site's replica of it, on 127.0.0.1 (no root, no lab): tokens
issued only to an admin, revocations versioned, the replica following the issuer's feed
(a new version once, then heartbeats; a revocation pushed at once; a silent issuer is a
failed sync), what it holds when the issuer is gone, and the JWKS override."""

from __future__ import annotations

import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.shared import https, identity, tokens
from lab.shared.clients import write_registry
from lab.shared.pki import create_ca, create_signing_key, issue_server_cert, public_pem
from lab.sites.introspect.replica import (
    FIRST_SYNC_FAST_S,
    FIRST_SYNC_RETRY_S,
    Replica,
    ReplicaConfig,
)
from lab.sites.issuer.app import FEEDS_PER_CLIENT

from .helpers import ROOT, free_port, stop_process, wait_for_line

NAME = "issuer.test"
ADMIN, SECRET = "admin", "s3cret-for-tests"


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    d = tmp_path_factory.mktemp("issuer")
    ca_key, ca_cert = create_ca("issuer test CA")
    key, cert = issue_server_cert(ca_key, ca_cert, [NAME], ["127.0.0.1"])
    signing = create_signing_key()
    (d / "ca.pem").write_bytes(ca_cert)
    (d / "tls.key").write_bytes(key)
    (d / "tls.pem").write_bytes(cert)
    (d / "signing.key").write_bytes(signing)
    (d / "signing.pub").write_bytes(public_pem(signing))
    write_registry(d / "clients.json", {ADMIN: SECRET, "other": SECRET}, n=2**10)
    port = free_port()
    config = {"site": "issuer", "issuer": "https://issuer.test", "audience": "lab",
              "public_key_file": str(d / "signing.pub"), "signing_key": str(d / "signing.key"),
              "clients_path": str(d / "clients.json"), "revocation_path": str(d / "revoked.json"),
              "tokens_path": str(d / "tokens.jsonl"), "admin_clients": [ADMIN],
              "listen": ["127.0.0.1"], "port": port, "tls_cert": str(d / "tls.pem"),
              "tls_key": str(d / "tls.key"), "log_file": str(d / "issuer.log")}
    (d / "issuer.json").write_text(json.dumps(config))
    proc = subprocess.Popen([sys.executable, "-m", "lab.sites.issuer", "--config",
                             str(d / "issuer.json")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    line = wait_for_line(proc, 20)
    if line != "ready\n":
        proc.kill()
        pytest.fail(f"the issuer did not get ready: {line!r} {proc.communicate()[1]}")
    yield {"dir": d, "port": port, "proc": proc, "kid": identity.kid_of(signing)}
    if proc.poll() is None:
        stop_process(proc, signal.SIGTERM)


def call(issuer: dict[str, Any], method: str, path: str, body: Any = None,
         who: tuple[str, str] | None = (ADMIN, SECRET)) -> https.Answer:
    headers = {"Authorization": https.basic(*who)} if who else None
    return https.request("127.0.0.1", issuer["port"], method, path,
                         ca_file=issuer["dir"] / "ca.pem", server_name=NAME, body=body,
                         headers=headers, timeout_s=5)


def replica(issuer: dict[str, Any], site: Path, interval_s: float = 0.1,
            timeout_s: float = 1.0) -> Replica:
    site.mkdir(exist_ok=True)
    config = ReplicaConfig(address="127.0.0.1", port=issuer["port"], server_name=NAME,
                           ca_file=issuer["dir"] / "ca.pem", interval_s=interval_s,
                           timeout_s=timeout_s,
                           jwks_path=site / "jwks.json", override_path=site / "override.json")
    return Replica(config, site / "revoked.json")


def test_only_an_admin_may_issue_revoke_or_list(issuer: dict[str, Any]) -> None:
    refused = [call(issuer, "POST", "/tokens", {"client_id": "c", "ttl_s": 60}, who=None),
               call(issuer, "POST", "/revoke", {"jti": "x"}, who=("other", SECRET)),
               call(issuer, "GET", "/tokens", who=(ADMIN, "wrong"))]
    assert [a.status for a in refused] == [401, 401, 401]
    # Every 401 says which scheme it wants (RFC 7235).
    assert all(a.headers.get("www-authenticate", "").startswith("Basic ") for a in refused)
    assert call(issuer, "POST", "/tokens", {"client_id": "c", "ttl_s": 0}).status == 400


def test_the_replica_pulls_a_new_version_once_then_holds_it(issuer: dict[str, Any],
                                                            tmp_path: Path) -> None:
    site = replica(issuer, tmp_path / "site")
    assert site.sync_once() and site.state()["kids"] == [issuer["kid"]]
    issued = call(issuer, "POST", "/tokens", {"client_id": "c", "scope": "s", "ttl_s": 60})
    assert issued.status == 200
    token, jti = issued.body["token"], issued.body["claims"]["jti"]
    assert tokens.kid_of_token(token) == issuer["kid"]
    key = site.keys()[issuer["kid"]]
    assert tokens.verify_token(token, key, issuer="https://issuer.test", audience="lab",
                               revoked=set()) is not None
    before = site.version
    revoked = call(issuer, "POST", "/revoke", {"jti": jti})
    assert revoked.body["added"] is True and revoked.body["version"] == before + 1
    again = call(issuer, "POST", "/revoke", {"jti": jti})
    assert again.body == {"jti": jti, "version": before + 1, "added": False}
    assert site.sync_once() and site.version == before + 1 and site.updates == 1
    held = json.loads((tmp_path / "site" / "revoked.json").read_text())
    assert held["version"] == before + 1 and jti in held["revoked"]
    assert site.sync_once() and site.updates == 1  # 304: nothing new, nothing rewritten
    listed = call(issuer, "GET", "/tokens").body
    assert jti in listed["revoked"] and any(t["jti"] == jti for t in listed["tokens"])
    assert "token" not in json.dumps(listed["tokens"])  # metadata only, never the token


def test_a_jwks_override_is_served_and_shown_beside_the_issuers(issuer: dict[str, Any],
                                                                tmp_path: Path) -> None:
    site = replica(issuer, tmp_path / "site")
    assert site.sync_once()
    rogue = identity.jwks_of([create_signing_key()])
    (tmp_path / "site" / "override.json").write_text(json.dumps(rogue))
    state = site.state()
    assert state["keys_source"] == "override"
    assert state["kids"] == [rogue["keys"][0]["kid"]] and state["issuer_kids"] == [issuer["kid"]]
    (tmp_path / "site" / "override.json").unlink()
    assert site.state()["kids"] == [issuer["kid"]]


def test_a_replica_that_never_synced_retries_fast_then_at_its_interval(
        issuer: dict[str, Any], tmp_path: Path) -> None:
    site = replica(issuer, tmp_path / "site", interval_s=0.5)
    assert site.pause_s() == FIRST_SYNC_RETRY_S  # not synced yet, just started
    site.started_mono -= FIRST_SYNC_FAST_S  # never synced, and long after start
    assert site.pause_s() == 0.5
    site.started_mono += FIRST_SYNC_FAST_S
    assert site.sync_once()
    assert site.pause_s() == 0.5  # synced once: the interval from now on


def test_a_revocation_is_pushed_to_a_following_replica_before_its_heartbeat(
        issuer: dict[str, Any], tmp_path: Path) -> None:
    # A heartbeat every 30 s: the new version can only come from the push.
    site = replica(issuer, tmp_path / "site", interval_s=30)
    assert site.sync_once()
    before, updates = site.version, site.updates
    got: list[bool] = []
    reader = threading.Thread(target=lambda: got.append(site.sync_once()), daemon=True)
    reader.start()
    issued = call(issuer, "POST", "/tokens", {"client_id": "c", "scope": "s", "ttl_s": 60})
    jti = issued.body["claims"]["jti"]
    assert call(issuer, "POST", "/revoke", {"jti": jti}).body["version"] == before + 1
    reader.join(10)  # far below the 30 s heartbeat
    assert got == [True] and site.version == before + 1 and site.updates == updates + 1
    held = json.loads((tmp_path / "site" / "revoked.json").read_text())
    assert jti in held["revoked"]


def test_the_feed_refuses_a_heartbeat_period_out_of_bounds(issuer: dict[str, Any]) -> None:
    for bad in ("10", "600001", "soon"):
        answer = call(issuer, "GET", f"/feed?every_ms={bad}", who=None)
        assert answer.status == 400 and answer.body["error"] == "invalid_request"


def open_feed(issuer: dict[str, Any], source: str) -> http.client.HTTPResponse:
    """A feed (heartbeat every 100 ms) followed from `source`, its first line read."""
    ctx = ssl.create_default_context(cafile=str(issuer["dir"] / "ca.pem"))
    conn = http.client.HTTPSConnection("127.0.0.1", issuer["port"], timeout=5, context=ctx,
                                       source_address=(source, 0))
    conn.request("GET", "/feed?every_ms=100")
    response = conn.getresponse()
    assert response.status == 200
    assert "jwks" in json.loads(response.readline())
    return response


def heartbeats(response: http.client.HTTPResponse, n: int) -> bool:
    """True if the feed goes on: `n` more lines come (within its 5 s timeout each)."""
    return all(response.readline() for _ in range(n))


def test_one_client_follows_a_bounded_number_of_feeds_a_new_one_ends_its_oldest(
        issuer: dict[str, Any]) -> None:
    mine = [open_feed(issuer, "127.0.0.3") for _ in range(FEEDS_PER_CLIENT)]
    other = open_feed(issuer, "127.0.0.4")
    try:
        assert all(heartbeats(r, 2) for r in mine)
        newest = open_feed(issuer, "127.0.0.3")
        oldest = mine.pop(0)
        lines = [oldest.readline() for _ in range(50)]  # a few queued heartbeats, then none
        assert b"" in lines, "the client's oldest feed went on past its share"
        # The client's newer feeds and another client's feed go on.
        assert all(heartbeats(r, 3) for r in [*mine, newest, other])
        mine.append(newest)
    finally:
        for r in [*mine, other]:
            r.close()


def test_a_silent_issuer_is_a_failed_sync_within_interval_and_timeout(
        issuer: dict[str, Any], tmp_path: Path) -> None:
    site = replica(issuer, tmp_path / "site", interval_s=0.1, timeout_s=0.3)
    assert site.sync_once()
    os.kill(issuer["proc"].pid, signal.SIGSTOP)
    try:
        assert not site.sync_once()  # the read gave up: no line within 0.1 + 0.3 s
    finally:
        os.kill(issuer["proc"].pid, signal.SIGCONT)
    assert site.state()["sync"]["last_error"] and site.failures == 1
    assert site.sync_once()  # a new feed once the issuer answers again


def test_without_the_issuer_the_replica_keeps_its_state_and_ages(issuer: dict[str, Any],
                                                                 tmp_path: Path) -> None:
    site = replica(issuer, tmp_path / "site")
    assert site.sync_once()
    version, kids = site.version, site.state()["kids"]
    issuer["proc"].send_signal(signal.SIGTERM)
    # It ends its open feeds (ours among them) instead of waiting out uvicorn's 10 s
    # graceful shutdown for them.
    assert issuer["proc"].wait(timeout=5) == 0
    stop_process(issuer["proc"], signal.SIGTERM)
    assert not site.sync_once()
    state = site.state()
    assert state["sync"]["last_error"] and state["sync"]["failures"] == 1
    assert site.version == version and state["kids"] == kids
    assert state["revocation"]["ever_synced"] is True
