"""negdb.service: the read-only HTTP query service."""
