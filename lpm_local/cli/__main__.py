"""`python -m lpm_local.cli` (and `accelerate launch -m lpm_local.cli ...`) run the CLI."""

from lpm_local.cli import main

main()
