"""orchestration tier (see docs/architecture.md)."""
