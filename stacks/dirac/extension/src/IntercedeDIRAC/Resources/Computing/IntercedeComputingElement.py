from intercede.dirac import IntercedeComputingElement

__all__ = ["IntercedeComputingElement"]
