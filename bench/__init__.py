"""Benchmarks (`make bench`): print tables and write bench/results.json."""
