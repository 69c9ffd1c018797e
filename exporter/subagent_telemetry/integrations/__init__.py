"""Integrations: one module per agent framework (docs/integrations.md)."""
