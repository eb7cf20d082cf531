"""`python -m lab` is the same as the `anycast-lab` command."""

from lab.cli.main import main

main()
