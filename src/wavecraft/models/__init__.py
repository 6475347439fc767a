"""User-facing models and pipelines."""
