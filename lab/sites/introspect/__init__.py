"""RFC 7662 token introspection service for the anycast lab.

Modules: ``app`` (Starlette application), ``server`` (TLS on several addresses with
uvicorn; ``python -m lab.sites.introspect``). What it reads (tokens, the client registry,
the revocation file, PKI) is in ``lab.shared``.
"""
