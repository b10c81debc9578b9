"""Model registry: versions, lineage, artifacts, stage transitions, electronic signatures, and a
hash-chained audit log, over SQLite (default) or PostgreSQL. See :mod:`.api` for the HTTP API."""
