"""Cached corpus artifacts: the content-addressed store, resumable encoder passes, and one module
per format (dense vectors, token index) that both writes and reads it."""
