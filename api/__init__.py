"""api tier (see docs/architecture.md)."""
