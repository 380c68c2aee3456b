"""``python -m negdb.cli`` runs the command line."""

from negdb.cli.main import main

main()
