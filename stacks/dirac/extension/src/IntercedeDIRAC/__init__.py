"""A DIRAC extension holding one module: Resources/Computing/IntercedeComputingElement.py."""


def extension_metadata() -> dict[str, object]:
    """What DIRAC's extension discovery reads (DIRAC.Core.Utilities.Extensions): above DIRAC's own priority 0."""
    return {"priority": 10}
