"""warehouse tier (see docs/architecture.md)."""
