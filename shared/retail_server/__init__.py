"""Retail Server (Commerce Scale Unit) OData client and its entity models."""
