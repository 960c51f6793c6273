"""The ARC CE backend: A-REX over its REST interface (docs/arc.md)."""

from intercede.backends.arc.backend import ARCBackend

__all__ = ["ARCBackend"]
