"""Batched secure inference of small torch models on secret-shared rows.

Many models of the same architecture are evaluated as one batch on the same
shared rows (SafeNet's ensemble, :mod:`pgkernels.defenses.safenet`): their
first layers are concatenated (one matmul or convolution of the shared inputs
with all models' weights), later linear layers become one batched matmul and
later convolutions one grouped convolution (``groups`` = number of models).

Supported models: ``torch.nn.Sequential`` stacks of ``Flatten``
(``start_dim=1``; the caller may name more flattening module types),
``Unflatten(1, shape)``, ``Linear`` (with bias), ``ReLU``, ``Conv2d`` (groups
1, dilation 1, numeric zero padding, with bias), ``MaxPool2d`` (square
kernel = stride, no padding, floor mode), and ``Dropout``/``Identity``
(no-ops at inference), ending with a ``Linear`` layer.

Use: :func:`parse_model` turns each model into a list of :class:`Layer`
(checked; plaintext parameters), :func:`signature` groups models of the same
architecture, :func:`stack_params` stacks a group's parameters in the batched
layouts, the caller secret-shares them, and :func:`forward` runs the group on
shared rows inside every compute party.

Cost of :func:`forward`, per layer, on r rows and a group of M models:
``Linear``/``Conv2d``: one CrypTen Beaver product of the shared activations
with the shared weights (1 round, opening the masked operands: ``8 (r x
inputs + weights)`` bytes per party for 2 parties) plus CrypTen's truncation
(local for 2 parties, its wraps protocol from the dealer for more); ``ReLU``:
:func:`pgkernels.protocols.compare.relu` (6 rounds, 13.25 bytes per element
for 2 parties); k x k max pooling: :func:`pgkernels.protocols.order.max`
(``ceil(log2 k^2)`` tournament levels of 6 rounds); ``Flatten``/``Unflatten``:
local. Reveals nothing: activations stay shared.
"""

from typing import NamedTuple, Optional, Tuple

import torch
from torch import nn

from .compare import relu
from .order import max as shared_max

KINDS = ("flatten", "unflatten", "linear", "relu", "conv", "maxpool")


class Layer(NamedTuple):
    """One supported layer: ``kind`` (one of :data:`KINDS`), its hyper-parameters
    (``hyper``, a tuple of ints / int tuples) and its parameters (``params``: an
    (weight, bias) pair for linear and conv layers, else None)."""

    kind: str
    hyper: tuple
    params: Optional[Tuple]


def _leaf_layers(model):
    if isinstance(model, nn.Sequential):
        out = []
        for m in model:
            out += _leaf_layers(m)
        return out
    return [model]


def _layer(layer, where, flatten_types):
    """The :class:`Layer` of one supported torch layer (None for a no-op)."""
    if isinstance(layer, (nn.Dropout, nn.Identity)):
        return None
    if isinstance(layer, (nn.Flatten,) + tuple(flatten_types)):
        if isinstance(layer, nn.Flatten) and (layer.start_dim != 1 or layer.end_dim != -1):
            raise TypeError(f"{where}: only Flatten(start_dim=1, end_dim=-1) is supported")
        return Layer("flatten", (), None)
    if isinstance(layer, nn.Unflatten):
        if layer.dim != 1:
            raise TypeError(f"{where}: only Unflatten(1, shape) is supported")
        return Layer("unflatten", tuple(int(s) for s in layer.unflattened_size), None)
    if isinstance(layer, nn.Linear):
        if layer.bias is None:
            raise TypeError(f"{where}: Linear without bias is not supported")
        return Layer("linear", (layer.in_features, layer.out_features), (layer.weight, layer.bias))
    if isinstance(layer, nn.ReLU):
        return Layer("relu", (), None)
    if isinstance(layer, nn.Conv2d):
        if layer.groups != 1 or tuple(layer.dilation) != (1, 1) or layer.bias is None \
                or layer.padding_mode != "zeros" or isinstance(layer.padding, str):
            raise TypeError(f"{where}: only Conv2d with groups=1, dilation 1, numeric zero padding "
                            "and a bias is supported")
        hyper = (layer.in_channels, layer.out_channels, tuple(layer.kernel_size),
                 tuple(layer.stride), tuple(layer.padding))
        return Layer("conv", hyper, (layer.weight, layer.bias))
    if isinstance(layer, nn.MaxPool2d):
        k = layer.kernel_size if isinstance(layer.kernel_size, int) else layer.kernel_size[0]
        ks = (layer.kernel_size,) * 2 if isinstance(layer.kernel_size, int) else tuple(layer.kernel_size)
        st = (layer.stride,) * 2 if isinstance(layer.stride, int) else tuple(layer.stride)
        pad = layer.padding if isinstance(layer.padding, int) else max(layer.padding)
        if ks != (k, k) or st != ks or pad != 0 or layer.dilation not in (1, (1, 1)) or layer.ceil_mode:
            raise TypeError(f"{where}: only MaxPool2d with a square kernel equal to its stride, "
                            "no padding and floor mode is supported")
        return Layer("maxpool", (k,), None)
    raise TypeError(f"{where}: layer {type(layer).__name__} is not supported by the batched secure inference "
                    "(Linear, ReLU, Conv2d, MaxPool2d, Flatten, Unflatten, Dropout, Identity)")


def parse_model(model, name="model", flatten_types=()):
    """The checked list of :class:`Layer` of a torch model (see the module
    docstring for what is supported). ``name`` names the model in errors;
    ``flatten_types``: more module classes that flatten ``(N, ...)`` to
    ``(N, d)``. Raises TypeError for an unsupported model or layer and
    ValueError for NaN/inf parameters."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {type(model).__name__}")
    layers = []
    for i, layer in enumerate(_leaf_layers(model)):
        parsed = _layer(layer, f"{name} layer {i}", flatten_types)
        if parsed is not None:
            layers.append(parsed)
    if not any(layer.kind in ("linear", "conv") for layer in layers):
        raise TypeError(f"{name} has no Linear or Conv2d layer")
    for layer in layers:
        for p in layer.params or ():
            if not torch.isfinite(p.detach()).all():
                raise ValueError(f"{name} has NaN or inf parameters")
    return layers


def signature(layers):
    """The architecture of a parsed model: models with equal signatures are
    evaluated as one batch."""
    return tuple((layer.kind, layer.hyper) for layer in layers)


def stack_params(group):
    """Per layer of a group of parsed models with one :func:`signature`, the
    group's float64 (weight, bias) in the batched layouts :func:`forward`
    expects, or None for layers without parameters: the first linear layer
    (d, M * out) and (M * out,) -- one matmul of the shared rows with every
    model; later linear layers (M, in, out) and (M, 1, out) -- one batched
    matmul; convolutions (M * c_out, c_in, k, k) and (M * c_out,) --
    concatenated or grouped."""
    out = []
    first = True
    for li, layer in enumerate(group[0]):
        if layer.kind not in ("linear", "conv"):
            out.append(None)
            continue
        Ws = [m[li].params[0].detach().double() for m in group]
        bs = [m[li].params[1].detach().double() for m in group]
        if layer.kind == "linear":
            if first:
                W = torch.cat([w.T for w in Ws], dim=1)
                b = torch.cat(bs)
            else:
                W = torch.stack([w.T for w in Ws])
                b = torch.stack(bs).unsqueeze(1)
        else:
            W = torch.cat(Ws)
            b = torch.cat(bs)
        out.append((W, b))
        first = False
    return out


def forward(x, layers, M):
    """Logits (M, n, C) of a group of M same-architecture models on the shared
    rows x (n, ...): an MPCTensor. ``layers``: the group's :class:`Layer` list
    with shared parameters in the layouts of :func:`stack_params`. Cost: see
    the module docstring. Reveals nothing.

    States: "plain" -- the shared input without a model dimension; "lin" --
    (M, n, f); "conv" -- (n, M * c, H, W), the models' channels side by side.
    """
    state = "plain"
    for kind, hyper, params in layers:
        if kind == "flatten":
            if state == "plain":
                x = x.reshape(x.size(0), -1)
            elif state == "conv":
                n = x.size(0)
                x = x.reshape(n, M, -1).permute(1, 0, 2)
                state = "lin"
        elif kind == "unflatten":
            if state == "plain":
                x = x.reshape(x.size(0), *hyper)
            elif state == "lin":
                if len(hyper) != 3:
                    raise TypeError("Unflatten after a Linear layer must give (channels, height, width)")
                n = x.size(1)
                x = x.reshape(M, n, *hyper).permute(1, 0, 2, 3, 4).reshape(n, M * hyper[0], hyper[1], hyper[2])
                state = "conv"
            else:
                raise TypeError("Unflatten of a convolution's output is not supported")
        elif kind == "linear":
            W, b = params
            if state == "plain":
                if x.dim() != 2:
                    raise TypeError("a Linear layer on the input needs flat rows (add a Flatten)")
                n = x.size(0)
                x = (x.matmul(W) + b).reshape(n, M, -1).permute(1, 0, 2)
            elif state == "lin":
                x = x.matmul(W) + b
            else:
                raise TypeError("a Linear layer after a convolution needs a Flatten in between")
            state = "lin"
        elif kind == "conv":
            W, b = params
            _, _, _, stride, padding = hyper
            if state == "plain":
                if x.dim() != 4:
                    raise TypeError("a Conv2d layer on the input needs (n, channels, H, W) rows (add an Unflatten)")
                x = x.conv2d(W, stride=stride, padding=padding)
            elif state == "conv":
                x = x.conv2d(W, stride=stride, padding=padding, groups=M)
            else:
                raise TypeError("a Conv2d layer after a Linear layer needs an Unflatten in between")
            x = x + b.reshape(1, -1, 1, 1)
            state = "conv"
        elif kind == "relu":
            x = relu(x)
        elif kind == "maxpool":
            k = hyper[0]
            if x.dim() != 4:
                raise TypeError("MaxPool2d needs (n, channels, H, W) inputs")
            n, c, H, Wd = x.size()
            h, w = H // k, Wd // k
            x = x[:, :, :h * k, :w * k].reshape(n, c, h, k, w, k).permute(0, 1, 2, 4, 3, 5)
            x = shared_max(x.reshape(n, c, h, w, k * k), dim=-1)
    if state != "lin":
        raise TypeError("the models must end with a Linear layer giving the class scores")
    return x


__all__ = ["KINDS", "Layer", "forward", "parse_model", "signature", "stack_params"]
