"""``python -m contagion`` is the ``contagion`` command."""

from contagion.cli import main

main()
