"""Small torch models (the federated lab's, private training's, SafeNet's), and flat-vector helpers.

Every model takes its input in any shape ``(N, ...)`` (the datasets give
images as ``(N, side, side)``; the lab flattens them to ``(N, side * side)``)
and returns class logits ``(N, classes)``. Clients and the server exchange
models as one flat float32 vector (:func:`get_flat` / :func:`set_flat`), the
layout in which the aggregators see the updates.
"""

import math

import numpy as np
import torch
from torch import nn

MODELS = ("logreg", "mlp", "cnn", "auror_mlp")
#: hidden widths of ``auror_mlp`` unless two widths are given
AUROR_HIDDEN = (128, 64)

__all__ = ["AUROR_HIDDEN", "Flatten", "MODELS", "auror_mlp", "cnn",
           "get_flat", "logreg", "make_model", "mlp", "num_params", "set_flat"]


def logreg(d_in, classes):
    """Multinomial logistic regression: one linear layer on the flattened input."""
    return nn.Sequential(nn.Flatten(), nn.Linear(int(d_in), int(classes)))


def mlp(d_in, classes, hidden=(64,)):
    """Fully connected ReLU network with the given hidden widths (default one layer of 64)."""
    layers, width = [nn.Flatten()], int(d_in)
    for h in hidden:
        layers += [nn.Linear(width, int(h)), nn.ReLU()]
        width = int(h)
    layers.append(nn.Linear(width, int(classes)))
    return nn.Sequential(*layers)


def auror_mlp(d_in, classes, hidden=AUROR_HIDDEN):
    """AUROR's MNIST network (Shen, Tople & Saxena, ACSAC 2016): a fully
    connected network with two tanh hidden layers (widths ``hidden``)."""
    hidden = tuple(int(h) for h in hidden)
    if len(hidden) != 2:
        raise ValueError(f"auror_mlp has two hidden layers, got widths {hidden}")
    return nn.Sequential(nn.Flatten(), nn.Linear(int(d_in), hidden[0]), nn.Tanh(), nn.Linear(hidden[0], hidden[1]),
                         nn.Tanh(), nn.Linear(hidden[1], int(classes)))


class Flatten(nn.Module):
    """Flattens ``(N, ...)`` to ``(N, d)``: the CNN's first layer, so it accepts
    images or flat rows. SafeNet's secure inference reads it as a flatten."""

    def forward(self, x):
        return x.reshape(x.shape[0], -1)


def cnn(side, classes, channels=(8, 16), hidden=64):
    """A small LeNet-style CNN for ``side x side`` grayscale images given flattened.

    Two 3x3 convolutions (padding 1) each followed by ReLU and 2x2 max pooling,
    then a ReLU hidden layer and the output layer: about 52k parameters for
    MNIST (28x28) and 7k for the 8x8 digits.
    """
    side = int(side)
    if side < 4:
        raise ValueError(f"cnn needs images of side >= 4, got {side}")
    c1, c2 = channels
    out_side = side // 2 // 2
    return nn.Sequential(
        Flatten(), nn.Unflatten(1, (1, side, side)),
        nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(c2 * out_side * out_side, int(hidden)), nn.ReLU(),
        nn.Linear(int(hidden), int(classes)),
    )


def make_model(name, dataset, seed=0, hidden=(64,)):
    """The model ``name`` ("logreg", "mlp", "cnn" or "auror_mlp") sized for ``dataset``.

    ``hidden``: the MLP's hidden widths; "auror_mlp" takes them when there are
    two, else uses :data:`AUROR_HIDDEN`.

    ``dataset``: a :class:`pgkernels.data.Dataset`. The weights are initialised
    from ``torch.manual_seed(seed)`` (the global torch generator is restored
    afterwards). "cnn" needs square single-channel images (MNIST, Fashion-MNIST,
    digits).
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {list(MODELS)}")
    d_in = int(np.prod(dataset.X_train.shape[1:]))
    classes = dataset.num_classes
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        if name == "logreg":
            return logreg(d_in, classes)
        if name == "mlp":
            return mlp(d_in, classes, hidden)
        if name == "auror_mlp":
            return auror_mlp(d_in, classes, hidden if len(tuple(hidden)) == 2 else AUROR_HIDDEN)
        side = math.isqrt(d_in)
        if side * side != d_in:
            raise ValueError(f"model 'cnn' needs square images; dataset {dataset.name!r} has {d_in} features")
        return cnn(side, classes)
    finally:
        torch.random.set_rng_state(state)


def num_params(model):
    """The number of parameters of ``model`` (the length of its flat vector)."""
    return sum(p.numel() for p in model.parameters())


def get_flat(model):
    """All parameters of ``model`` concatenated into one 1-D float32 tensor (a copy)."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).to(torch.float32).clone()


@torch.no_grad()
def set_flat(model, vec):
    """Write the 1-D vector ``vec`` (torch or numpy, length :func:`num_params`) into the parameters."""
    vec = torch.as_tensor(vec)
    n = num_params(model)
    if vec.ndim != 1 or vec.numel() != n:
        raise ValueError(f"expected a flat vector of {n} values, got shape {tuple(vec.shape)}")
    i = 0
    for p in model.parameters():
        k = p.numel()
        p.copy_(vec[i:i + k].reshape(p.shape).to(p.dtype))
        i += k
    return model
