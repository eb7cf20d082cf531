"""The lab's trust material, made at `up`: a lab CA, the introspection service's TLS
certificate, the token issuer's signing key, the registered API clients (secrets stored
hashed for the service, in a root-only file for the lab's own tools) and the health
checks' canary tokens (one active, one revoked on every site).

Everything lives under <lab dir>/pki/ (mode 0700); nothing here is ever logged.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lab.model import names
from lab.model.plan import AddressPlan
from lab.shared import clients, identity, pki, tokens

ISSUER = "https://issuer.anycast.lab"
AUDIENCE = "anycast-lab"
SERVICE_NAME = "introspect.anycast.lab"
ISSUER_NAME = "issuer.anycast.lab"  # the name on the issuer's certificate
LAB_CLIENTS = ("lab-admin", "healthd")
# scrypt's cost protects secrets a person chose; the lab's clients get 256-bit random
# ones (clients.generate_secret), which no stretching makes harder to guess. 2**10 costs
# ~5 ms a check instead of ~70 ms (measured) -- paid at every site's first request while
# the lab starts, and for every wrong secret an abusive client sends.
LAB_SCRYPT_N = 2**10
CANARY_TTL_S = 7 * 24 * 3600


@dataclass(frozen=True)
class Paths:
    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.root / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.root / "server.key"

    @property
    def issuer_cert(self) -> Path:
        return self.root / "issuer.pem"

    @property
    def issuer_key(self) -> Path:
        return self.root / "issuer.key"

    @property
    def signing_key(self) -> Path:
        return self.root / "signing.key"

    @property
    def signing_pub(self) -> Path:
        return self.root / "signing.pub"

    @property
    def registry(self) -> Path:
        return self.root / "clients.json"

    @property
    def secrets(self) -> Path:
        return self.root / "client-secrets.json"

    @property
    def canaries(self) -> Path:
        return self.root / "canaries.json"

    @property
    def tokens(self) -> Path:
        return self.root / "tokens.jsonl"

    # One value per file, for the health daemons' introspection check.
    @property
    def healthd_secret(self) -> Path:
        return self.root / "healthd.secret"

    @property
    def canary_active(self) -> Path:
        return self.root / "canary-active.jwt"

    @property
    def canary_revoked(self) -> Path:
        return self.root / "canary-revoked.jwt"


def paths(lab_dir: Path) -> Paths:
    return Paths(lab_dir / names.PKI)


def _write(path: Path, data: bytes | str, private: bool = False) -> None:
    payload = data.encode() if isinstance(data, str) else data
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(payload)


def server_addresses(plan: AddressPlan) -> list[str]:
    """The certificate's IP addresses: anycast, and every site's unicast addresses."""
    out = [str(plan.anycast4.network_address), str(plan.anycast6.network_address)]
    for site in plan.by_role("site"):
        out += [str(site.interfaces[0].v4.ip), str(site.interfaces[0].v6.ip)]
    return out


def create(lab_dir: Path, plan: AddressPlan) -> Paths:
    """Make all of the lab's trust material (fresh for every `up`)."""
    p = paths(lab_dir)
    p.root.mkdir(mode=0o700, parents=True, exist_ok=True)
    for name, (data, private) in material(plan).items():
        _write(p.root / name, data, private=private)
    return p


def material(plan: AddressPlan) -> dict[str, tuple[bytes, bool]]:
    """The lab's trust material as file name (in the pki directory) -> (bytes, private),
    in the order `create` writes it; nothing is written here (an export writes the same)."""
    p = Paths(Path("."))
    out: dict[str, tuple[bytes, bool]] = {}

    def put(path: Path, data: bytes | str, private: bool = False) -> None:
        out[path.name] = (data.encode() if isinstance(data, str) else data, private)

    ca_key, ca_cert = pki.create_ca(f"anycast-lab {plan.lab} CA")
    put(p.ca_key, ca_key, private=True)
    put(p.ca_cert, ca_cert)
    key, cert = pki.issue_server_cert(ca_key, ca_cert, [SERVICE_NAME], server_addresses(plan))
    put(p.server_key, key, private=True)
    put(p.server_cert, cert)
    issuer = plan.issuer
    if issuer is not None:
        key, cert = pki.issue_server_cert(ca_key, ca_cert, [ISSUER_NAME],
                                          [str(issuer.interfaces[0].v4.ip),
                                           str(issuer.interfaces[0].v6.ip)])
        put(p.issuer_key, key, private=True)
        put(p.issuer_cert, cert)
    signing = pki.create_signing_key()
    put(p.signing_key, signing, private=True)
    put(p.signing_pub, pki.public_pem(signing))
    kid = identity.kid_of(signing)
    secrets = {cid: clients.generate_secret() for cid in LAB_CLIENTS}
    put(p.secrets, json.dumps(secrets, indent=2), private=True)
    with tempfile.TemporaryDirectory() as tmp:  # the registry's own writer, its bytes kept
        clients.write_registry(Path(tmp) / p.registry.name, secrets, n=LAB_SCRYPT_N)
        put(p.registry, (Path(tmp) / p.registry.name).read_bytes(), private=True)
    active, active_claims = tokens.issue_token(
        signing, issuer=ISSUER, audience=AUDIENCE, client_id="healthd", sub="canary-active",
        scope="health", ttl_s=CANARY_TTL_S, kid=kid)
    revoked, revoked_claims = tokens.issue_token(
        signing, issuer=ISSUER, audience=AUDIENCE, client_id="healthd", sub="canary-revoked",
        scope="health", ttl_s=CANARY_TTL_S, kid=kid)
    put(p.healthd_secret, secrets["healthd"], private=True)
    put(p.canary_active, active, private=True)
    put(p.canary_revoked, revoked, private=True)
    put(p.canaries, json.dumps({"active": active, "revoked": revoked,
                                "revoked_jti": revoked_claims["jti"],
                                "active_jti": active_claims["jti"]}, indent=2),
        private=True)
    return out


def client_secret(lab_dir: Path, client_id: str) -> str:
    return json.loads(paths(lab_dir).secrets.read_text())[client_id]


def canaries(lab_dir: Path) -> dict[str, str]:
    return json.loads(paths(lab_dir).canaries.read_text())
