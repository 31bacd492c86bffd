"""Argument checks and share plumbing between CrypTen MPCTensors and the kernels.

Part of the stated protocol API (re-exported by :mod:`pgkernels.protocols.blocks`).
Every function here is local: no round, no byte sent, nothing revealed --
except :func:`decode`, an opening.
"""

import math
import numbers

import torch

FRAC_BITS_MAX = 62


def mpc_module():
    """``crypten.mpc`` (imported on first use; importing pgkernels made it importable)."""
    import crypten.mpc

    return crypten.mpc


def check_mpc(x, name, allow_public=False):
    """x must be an arithmetic-shared MPCTensor (or public, if allowed)."""
    mpc = mpc_module()
    if isinstance(x, mpc.MPCTensor):
        if x.ptype != mpc.arithmetic:
            raise TypeError(f"{name} must be arithmetic-shared; convert it with {name}.to(crypten.mpc.arithmetic)")
        if x.is_cuda:
            from .. import ops

            if not ops.cuda_built():
                raise NotImplementedError(
                    f"{name} is on CUDA but this pgkernels build has no CUDA kernels: rebuild on a machine with "
                    "nvcc and a CUDA torch (FORCE_CUDA=1 pip install --no-build-isolation -e .)")
        return x
    if allow_public:
        return check_public(x, name)
    raise TypeError(f"{name} must be a crypten MPCTensor, got {type(x).__name__}")


def check_public(y, name):
    """A public operand: a finite number or numeric tensor."""
    if isinstance(y, bool):
        return y
    if isinstance(y, numbers.Number):
        if isinstance(y, complex) or not math.isfinite(y):
            raise ValueError(f"{name} must be a finite real number, got {y!r}")
        return y
    if isinstance(y, torch.Tensor):
        if y.is_complex():
            raise TypeError(f"{name} must be a real tensor, got {y.dtype}")
        if y.is_floating_point() and not torch.isfinite(y).all():
            raise ValueError(f"{name} contains NaN or inf")
        return y
    raise TypeError(f"{name} must be an MPCTensor, a tensor or a number, got {type(y).__name__}")


def check_operand(y, name, ref):
    """Second operand of a binary op with MPCTensor ref: shared or public, broadcastable."""
    mpc = mpc_module()
    if isinstance(y, mpc.MPCTensor):
        check_mpc(y, name)
        shape = y.size()
    else:
        y = check_public(y, name)
        if isinstance(y, torch.Tensor):
            scale = ref.encoder.scale
            if y.is_floating_point() and y.numel() and y.abs().max().item() * scale >= 2.0 ** 63:
                raise ValueError(f"{name} has values beyond the fixed-point range (|v| < 2^63 / {scale})")
            shape = y.shape
        else:
            if abs(float(y)) * ref.encoder.scale >= 2.0 ** 63:
                raise ValueError(f"{name}={y!r} is beyond the fixed-point range")
            shape = ()
    try:
        torch.broadcast_shapes(tuple(ref.size()), tuple(shape))
    except RuntimeError:
        raise ValueError(f"{name} of shape {tuple(shape)} does not broadcast with shape {tuple(ref.size())}")
    return y


def raw_share(x):
    """This party's share of x as a plain int64 torch tensor, x's shape (on a
    GPU CrypTen wraps it in a CUDALongTensor; this unwraps it)."""
    share = x.share
    if hasattr(share, "tensor") and not isinstance(share, torch.Tensor):
        share = share.tensor()
    return share


def flat_share(x):
    """This party's int64 share of x, flattened and contiguous."""
    return raw_share(x).reshape(-1).contiguous()


def like(ref, flat, scale):
    """An MPCTensor of ref's shape holding the flat share, with the given scale."""
    return like_shape(flat.view(tuple(ref.size())), scale)


def frac_bits(scale):
    """Fractional bits of a fixed-point scale (an MPCTensor's ``encoder.scale``)."""
    precision = int(round(math.log2(scale)))
    if 2 ** precision != scale:
        raise ValueError(f"scale {scale} is not a power of two")
    return precision


def like_shape(share, scale):
    """An MPCTensor holding this party's share tensor, with the given (power of two) scale."""
    return mpc_module().MPCTensor.from_shares(share, precision=frac_bits(scale))


def to_mpc(value, ref):
    """A public value as a (trivially) shared MPCTensor with ref's encoding."""
    mpc = mpc_module()
    from ..runtime import comm

    t = torch.as_tensor(value)
    enc = ref.encoder.encode(t)
    if ref.is_cuda and not enc.is_cuda:
        enc = enc.to(ref.device)  # a CUDA operand's public partner joins it on its GPU
    share = enc if comm.rank() == 0 else torch.zeros_like(enc)
    return mpc.MPCTensor.from_shares(share, precision=frac_bits(ref.encoder.scale))


def decode(x):
    """Reveal an MPCTensor and decode it exactly, as float64.

    CrypTen's ``get_plain_text`` divides negative values by ``scale - 1`` and
    patches the remainder, which is off by one whole unit for some negative
    inputs (e.g. -15.9998 decodes as -16.9998; -1e6 as -1000015). This reveals
    the ring integers and divides by the scale in float64. Reveals x to all
    parties (it is an opening).
    """
    check_mpc(x, "x")
    t = x._tensor.reveal()
    if not isinstance(t, torch.Tensor) and hasattr(t, "tensor"):
        t = t.tensor()  # a CUDALongTensor: the plain tensor on its GPU
    return t.double() / x.encoder.scale


__all__ = ["FRAC_BITS_MAX", "check_mpc", "check_operand", "check_public", "decode", "flat_share", "frac_bits",
           "like", "like_shape", "mpc_module", "raw_share", "to_mpc"]
