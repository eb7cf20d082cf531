"""Integration tests: real labs in real namespaces (root and the lab's tools)."""
