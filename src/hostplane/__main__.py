"""``python -m hostplane``: the same as the ``hostplane`` command."""

from hostplane.cli import main

main()
