"""What the orchestrator, the site programs and the probes agree on: sockets in a namespace,
the id.server question, the speaker's control protocol, PKI, tokens, the client registry
and revocation files. Imports nothing else from `lab`."""
