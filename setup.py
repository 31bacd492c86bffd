"""Build pgkernels' compiled ops against the installed torch.

    pip install --no-build-isolation -e .

Environment switches (as in pytorch_scatter): FORCE_CUDA=1 builds the CUDA
sources (csrc/cuda/*.cu) even when no GPU is visible (nvcc and a CUDA build of
torch are enough: the extension links torch's CUDA libraries); FORCE_ONLY_CPU=1
never builds them; DEBUG=1 compiles with -O0 -g. Without FORCE_CUDA the CUDA
sources are built only when torch sees a GPU, so a CPU machine builds exactly
the CPU extension. TORCH_CUDA_ARCH_LIST picks the GPU architectures (e.g. 9.0).
"""

import glob
import os
import re

from setuptools import find_packages, setup

import torch
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension, CUDA_HOME

ROOT = os.path.dirname(os.path.abspath(__file__))


def read_version():
    """The version in pgkernels/_version.py, parsed (not imported: importing
    the package needs the extension this file builds) with the pattern
    CMakeLists.txt uses."""
    with open(os.path.join(ROOT, "pgkernels", "_version.py")) as f:
        found = re.search(r'^__version__ = "(\d+\.\d+\.\d+)"$', f.read(), re.M)
    if found is None:
        raise RuntimeError('pgkernels/_version.py has no line __version__ = "MAJOR.MINOR.PATCH"')
    return found.group(1)


def sources(pattern):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def extension():
    debug = os.getenv("DEBUG", "0") == "1"
    cuda_sources = sources("csrc/cuda/*.cu")
    with_cuda = bool(cuda_sources) and CUDA_HOME is not None and (
        torch.cuda.is_available() or os.getenv("FORCE_CUDA", "0") == "1"
    )
    if os.getenv("FORCE_ONLY_CPU", "0") == "1":
        with_cuda = False
    cxx = ["-std=c++17", "-O0" if debug else "-O3", "-fvisibility=hidden"]
    if debug:
        cxx.append("-g")
    # The torch-free core (public headers in csrc/pgkernels/, included as
    # <pgkernels/...>) is compiled into the extension; csrc/cpu/<family>_cpu.cpp
    # hold the ATen wrappers.
    srcs = (
        ["csrc/ops.cpp", "csrc/module.cpp"]
        + sources("csrc/core/*.cpp")
        + sources("csrc/cpu/*.cpp")
    )
    kwargs = dict(
        name="pgkernels._C",
        sources=srcs,
        include_dirs=[os.path.join(ROOT, "csrc")],
        extra_compile_args={"cxx": cxx},
    )
    if with_cuda:
        kwargs["sources"] += cuda_sources
        # -Icsrc (include_dirs) also serves nvcc: the kernels include the
        # shared csrc/pgkernels/*_hd.h arithmetic.
        kwargs["extra_compile_args"]["nvcc"] = ["-O3", "-std=c++17"] + (["-g", "-G"] if debug else [])
        return CUDAExtension(**kwargs)
    return CppExtension(**kwargs)


setup(
    name="pgkernels",
    version=read_version(),
    description="Fast secure kernels for defending private ML against data poisoning, on CrypTen shares",
    packages=find_packages(include=["pgkernels", "pgkernels.*"]),
    python_requires=">=3.9",
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension},
    entry_points={"console_scripts": ["pgkernels=pgkernels.cli:main"]},
    zip_safe=False,
)
