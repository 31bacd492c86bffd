"""Private training under poisoning: pooled training (plaintext and MPC) with
and without Hayes & Ohrimenko's adversarial defense.

Submodules are imported lazily (``pgkernels.train.advtrain``,
``pgkernels.train.mpc``, ``pgkernels.train.experiment`` -- the end-to-end
runner behind ``pgkernels train``) so importing the package stays cheap.
"""

import importlib

_LAZY = {"train_plaintext": "advtrain", "train_local_models": "advtrain", "train_mpc": "mpc",
         "TrainConfig": "experiment", "run": "experiment", "sweep": "experiment"}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
