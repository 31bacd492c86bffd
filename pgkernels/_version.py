"""The one version of pgkernels.

Read by ``pgkernels/__init__.py`` (import), ``setup.py`` and
``CMakeLists.txt`` (both parse the line below with the same pattern), so the
Python package, the wheel and the installed C++ package (``find_package``,
``<pgkernels/version.h>``) agree; ``tests/test_package.py`` checks that they
do. Keep it plain ``MAJOR.MINOR.PATCH``: CMake's ``project(VERSION)`` takes
numbers only.
"""

__version__ = "0.1.0"
