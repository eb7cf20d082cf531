"""`python -m lab` is the same as the `anycast-lab` command."""

from lab.cli import main

main()
