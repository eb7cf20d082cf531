"""Unit tests: pure parts and programs on loopback, no root."""
