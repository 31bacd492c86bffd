"""Make CrypTen 0.4.1 importable on current torch.

CrypTen's ONNX converter imports ``torch.onnx._internal.registration``, which
newer torch moved to ``torch.onnx._internal.torchscript_exporter.registration``.
We alias the moved module (or register an empty stand-in when neither exists)
before CrypTen is imported; only CrypTen's ONNX model converter depends on it.
"""

import importlib
import sys
import types

_OLD = "torch.onnx._internal.registration"
_NEW = "torch.onnx._internal.torchscript_exporter.registration"


def patch_torch_for_crypten():
    if _OLD in sys.modules:
        return
    try:
        importlib.import_module(_OLD)
        return
    except ImportError:
        pass
    try:
        module = importlib.import_module(_NEW)
    except ImportError:
        module = types.ModuleType(_OLD)
        module.registry = None
    sys.modules[_OLD] = module


def import_crypten():
    """Import and return the ``crypten`` module with the compat patch applied."""
    patch_torch_for_crypten()
    import crypten  # noqa: F401

    return crypten
