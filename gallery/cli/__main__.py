"""`python -m gallery.cli ...`: the same as the `gallery` command."""

from gallery.cli import main

main()
