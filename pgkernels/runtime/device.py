"""The device a session keeps its shares and dealer material on.

``pgkernels.launch(..., device="cuda")`` (and the CLIs' ``--device cuda``)
sets :data:`ENV` in every party's and the dealer's environment; the runtime
reads it with :func:`session_device`. On "cuda" each party's shares and its
dealer material live on the GPU and the kernels run there (``csrc/cuda/``);
the messages between parties and to and from the dealer go through host
memory over gloo (several parties share one GPU on one machine, which NCCL
does not allow). The dealer computes its corrections on the GPU too.
"""

import os

import torch

ENV = "PGKERNELS_DEVICE"


def check_device(device, name="device"):
    """``device`` ("cpu", "cuda", "cuda:N" or a torch.device) as a torch.device;
    ValueError naming ``name`` when it is malformed, or CUDA when this machine
    or this pgkernels build cannot run on it."""
    try:
        dev = torch.device(device)
    except (TypeError, RuntimeError) as e:
        raise ValueError(f"{name} must be 'cpu' or 'cuda' (or 'cuda:N'), got {device!r}") from e
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type != "cuda":
        raise ValueError(f"{name} must be 'cpu' or 'cuda', got {device!r}")
    if not torch.cuda.is_available():
        raise ValueError(f"{name}={device!r}: CUDA is not available on this machine "
                         f"(torch {torch.__version__}, built with CUDA {torch.version.cuda})")
    from .. import ops

    if not ops.cuda_built():
        raise ValueError(f"{name}={device!r}: this pgkernels build has no CUDA kernels; rebuild it where "
                         "nvcc and a CUDA torch are present (FORCE_CUDA=1 pip install --no-build-isolation -e .)")
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"{name}={device!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    return dev if dev.index is not None else torch.device("cuda", torch.cuda.current_device())


_CHECKED = {}


def session_device():
    """This process's session device (from :data:`ENV`; the CPU when unset)."""
    value = os.environ.get(ENV, "cpu")
    dev = _CHECKED.get(value)
    if dev is None:
        dev = _CHECKED[value] = check_device(value, ENV)
    return dev


def is_cuda_session():
    return os.environ.get(ENV, "cpu").startswith("cuda")
