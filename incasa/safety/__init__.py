"""Guardrails (prompt and output policy) and provenance (C2PA content credentials, invisible watermark)."""
