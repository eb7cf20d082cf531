"""RFC 7662 token introspection service for the anycast lab.

Modules: ``pki`` (CA, server certs, signing keys), ``tokens`` (ES256 JWT issue
and verify), ``clients`` (hashed caller registry, HTTP Basic), ``revocation``
(versioned per-site revocation file), ``app`` (Starlette application),
``guard`` (what a connection may cost: limits, timeouts, JSON protocol errors),
``server`` (TLS on several addresses with uvicorn; ``python -m lab.introspect``).
"""
