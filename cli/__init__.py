"""negdb.cli."""
