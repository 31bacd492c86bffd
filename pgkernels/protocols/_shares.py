"""Deprecated alias of :mod:`pgkernels.protocols.shares`, kept only so that
callers outside ``protocols/`` that still import it (``pgkernels/__init__.py``,
``serving/service.py``) keep working until they import the public module.
Remove once nothing imports it."""

from .shares import *  # noqa: F401,F403
from .shares import __all__  # noqa: F401
