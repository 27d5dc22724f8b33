"""`python -m planher`: the command line (planher.cli)."""

from planher.cli import main

main()
