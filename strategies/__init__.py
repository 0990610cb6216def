"""strategies tier (see docs/architecture.md)."""
