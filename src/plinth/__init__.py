"""Plinth: one foundation for a model's whole life."""

__version__ = "0.1.0"
