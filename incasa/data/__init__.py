"""Curation: a balanced, de-duplicated corpus from local folders, shards and manifests (locally or on Ray)."""
