"""The package version (pyproject.toml reads it; runs and stored teachers record it)."""

__version__ = "0.2.0"
