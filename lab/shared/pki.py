"""Lab PKI: owns key and certificate generation for the introspection service.

Everything here is a pure function from inputs to PEM bytes (nothing is written
to disk, nothing is cached): a self-signed CA, TLS server certificates issued by
that CA (SAN with DNS names and IP addresses, serverAuth EKU) and the ECDSA
P-256 key pair that signs ES256 access tokens. All keys are ECDSA P-256 and all
private keys are unencrypted PKCS#8 PEM, which is what a lab wants and what
``ssl.SSLContext.load_cert_chain`` and PyJWT accept directly.
"""

from __future__ import annotations

import datetime as dt
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CA_VALID_DAYS",
    "SERVER_CERT_VALID_DAYS",
    "create_ca",
    "create_signing_key",
    "issue_server_cert",
    "public_pem",
]

CA_VALID_DAYS = 365
SERVER_CERT_VALID_DAYS = 30
# Backdate notBefore a little so that hosts with slightly skewed clocks accept a fresh cert.
_BACKDATE = dt.timedelta(minutes=5)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )


def _load_ec_private_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("expected an ECDSA private key")
    return key


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """A CA's key signs certificates only; a server's key signs (its TLS handshakes) only."""
    return x509.KeyUsage(
        digital_signature=not ca, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
        encipher_only=False, decipher_only=False,
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def create_ca(common_name: str, *, valid_days: int = CA_VALID_DAYS) -> tuple[bytes, bytes]:
    """Create a self-signed ECDSA P-256 CA; return ``(key_pem, cert_pem)``.

    The CA may sign leaf certificates only (``pathLenConstraint`` 0).
    """
    if not common_name:
        raise ValueError("common_name must not be empty")
    key = _new_key()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "anycast-lab"),
        ]
    )
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + dt.timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return _private_pem(key), cert.public_bytes(serialization.Encoding.PEM)


def issue_server_cert(
    ca_key_pem: bytes,
    ca_cert_pem: bytes,
    dns_names: list[str],
    ip_addresses: list[str],
    *,
    valid_days: int = SERVER_CERT_VALID_DAYS,
    expired: bool = False,
) -> tuple[bytes, bytes]:
    """Issue a TLS server certificate signed by the CA; return ``(key_pem, cert_pem)``.
    ``expired``: valid from two days ago until yesterday (for the lab's expired-cert fault).

    The certificate carries every DNS name and IP address in its subjectAltName,
    the serverAuth extended key usage and a fresh ECDSA P-256 key. Its subject CN
    is the first DNS name (or the first IP address if there is no DNS name).
    """
    if not dns_names and not ip_addresses:
        raise ValueError("a server certificate needs at least one DNS name or IP address")
    ips = [ipaddress.ip_address(a) for a in ip_addresses]  # raises ValueError on junk
    ca_key = _load_ec_private_key(ca_key_pem)
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    if ca_cert.public_key() != ca_key.public_key():
        raise ValueError("CA key does not match CA certificate")

    key = _new_key()
    now = _now()
    cn = dns_names[0] if dns_names else str(ips[0])
    san: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
    san += [x509.IPAddress(ip) for ip in ips]
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - (dt.timedelta(days=2) if expired else _BACKDATE))
        .not_valid_after(now + (dt.timedelta(days=-1) if expired
                                else dt.timedelta(days=valid_days)))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return _private_pem(key), cert.public_bytes(serialization.Encoding.PEM)


def create_signing_key() -> bytes:
    """Create an ECDSA P-256 private key for signing ES256 JWTs; return it as PEM."""
    return _private_pem(_new_key())


def public_pem(private_pem: bytes) -> bytes:
    """Return the SubjectPublicKeyInfo PEM of an ECDSA private key PEM."""
    return (
        _load_ec_private_key(private_pem)
        .public_key()
        .public_bytes(
            encoding=serialization.Encoding.PEM,
            format=serialization.PublicFormat.SubjectPublicKeyInfo,
        )
    )
