"""What the lab's keys may do: the CA's signs certificates, a server's signs handshakes."""

from __future__ import annotations

from cryptography import x509

from lab.shared import pki

SIGNING = ("key_cert_sign", "crl_sign")
OTHERS = ("content_commitment", "key_encipherment", "data_encipherment", "key_agreement")


def _usage(cert_pem: bytes) -> x509.Extension[x509.KeyUsage]:
    cert = x509.load_pem_x509_certificate(cert_pem)
    return cert.extensions.get_extension_for_class(x509.KeyUsage)


def test_the_ca_key_signs_certificates_only() -> None:
    _key, cert = pki.create_ca("lab CA")
    usage = _usage(cert)
    assert usage.critical
    assert all(getattr(usage.value, f) for f in SIGNING)
    assert not usage.value.digital_signature
    assert not any(getattr(usage.value, f) for f in OTHERS)


def test_a_server_key_signs_handshakes_only() -> None:
    ca_key, ca_cert = pki.create_ca("lab CA")
    _key, cert = pki.issue_server_cert(ca_key, ca_cert, ["introspect.anycast.lab"], [])
    usage = _usage(cert)
    assert usage.critical
    assert usage.value.digital_signature
    assert not any(getattr(usage.value, f) for f in SIGNING + OTHERS)
