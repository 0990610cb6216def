"""realtime tier (see docs/architecture.md)."""
