"""The inspector role (lands with a later issue; see docs/architecture.md)."""
