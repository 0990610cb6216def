"""dashboards tier (see docs/architecture.md)."""
