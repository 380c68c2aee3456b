"""negdb.store."""
