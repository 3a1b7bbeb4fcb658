"""The studio role (lands with a later issue; see docs/architecture.md)."""
