"""The lab's token issuer (`python -m lab.sites.issuer --config FILE`): signing keys (a
JWKS) and the authoritative, versioned revocation list, over HTTPS on the issuer node's
own address. Served by the introspection service's server (listeners, connection guard,
TLS), with its own application (`app.py`)."""
