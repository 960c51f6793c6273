"""The DIRAC plug-in: :class:`IntercedeComputingElement`, a DIRAC ComputingElement over any intercede backend
(docs/dirac.md). DIRAC is the optional extra ``dirac``; without it the plug-in runs on a stand-in base class."""

from intercede.dirac.computing_element import HAVE_DIRAC, IntercedeComputingElement

__all__ = ["HAVE_DIRAC", "IntercedeComputingElement"]
