"""The advisor role (lands with a later issue; see docs/architecture.md)."""
