"""`python -m adminchain` runs the command line."""

from adminchain.cli import main

main()
