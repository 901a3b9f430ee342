"""The package version, in a module of its own so any layer (``core`` included) can read it without importing
the package root (which registers the envs)."""

__version__ = "0.1.0"
