"""``python -m search ...`` runs the ``wen`` command line (same as the ``wen`` script)."""

from search.cli import main

main()
