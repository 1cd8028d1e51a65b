"""A small todo HTTP JSON API on SQLite."""

__version__ = "0.1.0"
