"""negdb.query."""
