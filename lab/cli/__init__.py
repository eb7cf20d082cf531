"""The `anycast-lab` command line: commands, exit codes, tables and JSON."""
