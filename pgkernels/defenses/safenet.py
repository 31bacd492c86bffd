"""SafeNet: a filtered majority-vote ensemble of the data owners' local models, in MPC.

SafeNet (Chaudhari, Jagielski & Oprea, "SafeNet: The Unreasonable
Effectiveness of Ensembles in Private Collaborative Learning", SaTML 2023)
replaces joint training in MPC by an ensemble: every data owner trains a model
on its own data in the clear, secret-shares the model with the MPC servers,
and the servers

1. **filter**: compute every model's accuracy on a shared validation set and
   drop the models below a threshold (a poisoned model that hurts clean
   accuracy is removed), and
2. **predict**: answer each query by a majority vote of the kept models (one
   poisoned owner among m can swing a query only where the honest models
   already split almost evenly).

:func:`safenet_reference` is the plaintext algorithm and
:func:`safenet_on_shares` the same algorithm on secret shares, with identical
semantics:

* model ``j`` is kept iff ``correct_j >= ceil(threshold * n_val)`` --
  ``val_acc_j >= threshold`` decided on integer counts, so MPC and plaintext
  agree exactly;
* each model's prediction is the argmax of its logits, ties to the lowest
  class; the ensemble's prediction is the argmax of the kept models' vote
  counts, ties to the lowest class (the rule of :func:`pgkernels.argmax`
  and ``numpy.argmax``);
* no model kept (threshold too high for these models): ``on_empty="raise"``
  (default) raises :class:`EmptyEnsembleError`; ``on_empty="all"`` falls back
  to the vote of all models.

Models: the stacks :mod:`pgkernels.protocols.nn` evaluates in batches
(``Flatten``, ``Unflatten``, ``Linear``, ``ReLU``, ``Conv2d``, ``MaxPool2d``,
``Dropout``/``Identity``) -- what :mod:`pgkernels.models` builds
(``logreg``, ``mlp``, ``cnn``).

Where the parts live: the rule on shares (:func:`safenet_on_shares`, run
inside every compute party), its plaintext reference and the input checks
are here; the batched secure inference is :mod:`pgkernels.protocols.nn`; the
job that shares the owners' models and data and starts the parties is
:func:`pgkernels.train.safenet_mpc.safenet_mpc`.
"""

import copy
import math
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from ..protocols import nn as secure_nn
from ..protocols.compare import ge, lt
from ..protocols.order import argmax
from ..protocols.shares import decode

ON_EMPTY = ("raise", "all")


class EmptyEnsembleError(ValueError):
    """No model reached the validation-accuracy threshold."""


def _flatten_types():
    """Module classes besides ``nn.Flatten`` that flatten ``(N, ...)`` to ``(N, d)``."""
    from ..models import Flatten

    return (Flatten,)


@torch.no_grad()
def _logits_plain(model, X, batch_size=8192):
    """float64 logits of a copy of ``model`` (eval mode) on the flat rows X."""
    m = copy.deepcopy(model).double().eval()
    out = [m(torch.from_numpy(X[i:i + batch_size])) for i in range(0, len(X), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, 0))


# ----------------------------------------------------------------------------
# input checks
# ----------------------------------------------------------------------------

def _check_rows(X, name):
    try:
        X = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a numeric array") from None
    if X.ndim < 2:
        raise ValueError(f"{name} must have shape (rows, features...), got {X.shape}")
    X = X.reshape(len(X), -1)
    if not np.all(np.isfinite(X)):
        raise ValueError(f"{name} contains NaN or inf")
    return X


class SafeNetInputs(NamedTuple):
    """Checked inputs of SafeNet (see :func:`check_inputs`)."""

    models: list          # the owners' torch models
    layers: list          # per model, its parsed pgkernels.protocols.nn.Layer list
    X_val: np.ndarray     # (n_val, d) float64
    y_val: np.ndarray     # (n_val,) int64 class indices
    X: np.ndarray         # (n, d) float64 query rows
    threshold: float
    classes: int          # number of classes the models output


def check_inputs(models, X_val, y_val, X, threshold, classes=None, on_empty="raise"):
    """Check SafeNet's arguments (see :func:`safenet_reference`) and return them
    as :class:`SafeNetInputs` (rows flattened to float64, labels int64).

    TypeError/ValueError naming the argument: models not a non-empty list of
    supported models (:func:`pgkernels.protocols.nn.parse_model`), threshold
    outside [0, 1], ``on_empty`` unknown, rows with NaN/inf or different
    widths, labels that are not integer class indices of the models' outputs,
    models that do not accept the rows or output different numbers of classes.
    """
    if isinstance(models, nn.Module) or not hasattr(models, "__len__"):
        raise TypeError("models must be a list of torch.nn.Module (one per data owner)")
    models = list(models)
    if not models:
        raise ValueError("models is empty: SafeNet needs at least one owner's model")
    layers = [secure_nn.parse_model(m, f"models[{j}]", _flatten_types()) for j, m in enumerate(models)]
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.integer, np.floating)):
        raise TypeError(f"threshold must be a number in [0, 1], got {type(threshold).__name__}")
    threshold = float(threshold)
    if not (0.0 <= threshold <= 1.0):  # also refuses NaN
        raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
    if on_empty not in ON_EMPTY:
        raise ValueError(f"on_empty must be one of {list(ON_EMPTY)}, got {on_empty!r}")
    X_val = _check_rows(X_val, "X_val")
    X = _check_rows(X, "X")
    if len(X_val) == 0:
        raise ValueError("X_val is empty: SafeNet scores the models on a validation set")
    if X_val.shape[1] != X.shape[1]:
        raise ValueError(f"X_val has {X_val.shape[1]} features per row but X has {X.shape[1]}")
    y_val = np.asarray(y_val)
    if y_val.ndim != 1 or len(y_val) != len(X_val):
        raise ValueError(f"y_val must be a vector of {len(X_val)} labels (one per X_val row), "
                         f"got shape {y_val.shape}")
    if y_val.dtype.kind == "f":
        if not np.all(np.isfinite(y_val)):
            raise ValueError("y_val contains NaN or inf")
        if np.any(y_val != np.round(y_val)):
            raise ValueError("y_val must hold integer class indices")
    elif y_val.dtype.kind not in "iub":
        raise TypeError(f"y_val must hold integer class indices, got dtype {y_val.dtype}")
    y_val = y_val.astype(np.int64)
    # every model must accept the rows and give the same number of classes
    widths = []
    for j, m in enumerate(models):
        try:
            widths.append(_logits_plain(m, X_val[:1]).shape[1])
        except RuntimeError as e:
            raise ValueError(f"models[{j}] does not accept rows of {X_val.shape[1]} features: {e}") from None
    if len(set(widths)) != 1:
        raise ValueError(f"the models output different numbers of classes: {widths}")
    num_classes = widths[0]
    if classes is not None:
        c = classes if isinstance(classes, (int, np.integer)) else len(classes)
        if int(c) != num_classes:
            raise ValueError(f"classes gives {int(c)} classes but the models output {num_classes}")
    if num_classes < 2:
        raise ValueError(f"the models must output >= 2 class scores, got {num_classes}")
    if y_val.min() < 0 or y_val.max() >= num_classes:
        raise ValueError(f"y_val labels must lie in [0, {num_classes}), got range [{y_val.min()}, {y_val.max()}]")
    return SafeNetInputs(models, layers, X_val, y_val, X, threshold, num_classes)


def min_correct(threshold, n_val):
    """The number of correct validation answers a model needs: ``ceil(threshold * n_val)``
    (rounded to 9 decimals first, so 0.7 * 10 needs 7, not 8)."""
    return int(math.ceil(round(threshold * n_val, 9)))


# ----------------------------------------------------------------------------
# plaintext reference
# ----------------------------------------------------------------------------

def safenet_reference(models, X_val, y_val, X, threshold=0.5, classes=None, on_empty="raise"):
    """SafeNet in plaintext (float64): filter by validation accuracy, then majority vote.

    Args:
        models: list of the owners' trained ``torch.nn.Module`` classifiers
            (see the module docstring for the supported layers).
        X_val, y_val: validation rows (any shape ``(n_val, ...)``) and class indices.
        X: query rows ``(n, ...)``, same features as X_val.
        threshold: minimum validation accuracy in [0, 1]; model j is kept iff
            ``correct_j >= ceil(threshold * n_val)``.
        classes: optional number of classes (or the list of class names), checked
            against the models' output width.
        on_empty: ``"raise"`` (:class:`EmptyEnsembleError` when no model is kept)
            or ``"all"`` (vote with all models then).

    Returns dict: ``pred`` (int64 (n,), class indices), ``kept`` (sorted list of
    kept model indices), ``val_acc`` (float (m,)), ``correct`` (int (m,)),
    ``votes`` (int (n, C), the kept models' vote counts), ``fallback`` (True
    when no model passed and ``on_empty="all"`` voted with all of them).
    """
    models, _, X_val, y_val, X, threshold, C = check_inputs(models, X_val, y_val, X, threshold, classes, on_empty)
    n_val = len(X_val)
    P_val = np.stack([_logits_plain(m, X_val).argmax(1) for m in models])       # (m, n_val)
    correct = (P_val == y_val[None, :]).sum(1).astype(np.int64)
    keep = correct >= min_correct(threshold, n_val)
    fallback = False
    if not keep.any():
        if on_empty == "raise":
            raise EmptyEnsembleError(f"no model reaches validation accuracy {threshold} "
                                     f"(best: {correct.max() / n_val:.4f})")
        keep[:] = True
        fallback = True
    if len(X):
        P = np.stack([_logits_plain(m, X).argmax(1) for m in models])            # (m, n)
        votes = np.stack([(P[keep] == c).sum(0) for c in range(C)], axis=1).astype(np.int64)
    else:
        votes = np.zeros((0, C), dtype=np.int64)
    return {"pred": votes.argmax(1).astype(np.int64) if len(X) else np.zeros(0, dtype=np.int64),
            "kept": [int(j) for j in np.flatnonzero(keep)] if not fallback else [],
            "val_acc": correct / n_val, "correct": correct, "votes": votes, "fallback": fallback}


# ----------------------------------------------------------------------------
# the rule on secret shares
# ----------------------------------------------------------------------------

def safenet_on_shares(groups, X_val, Y_val, X, min_correct, on_empty="raise", chunk=4096,
                      reveal_selection=False):
    """SafeNet's filter and vote on secret shares; runs in every compute party.

    Args:
        groups: list of ``(M, layers)``: M same-architecture models with their
            :class:`pgkernels.protocols.nn.Layer` list, whose parameters are
            shared MPCTensors in the layouts of
            :func:`pgkernels.protocols.nn.stack_params`. The models' order is
            the groups' concatenation.
        X_val (n_val, d), Y_val (n_val, C): shared validation rows and one-hot
            labels (scale 1); X (n, d): shared query rows.
        min_correct: public count a model needs (:func:`min_correct`).
        on_empty, reveal_selection: as in
            :func:`pgkernels.train.safenet_mpc.safenet_mpc`.
        chunk: rows evaluated per batch.

    Protocol (C classes, m models, rows in chunks):

    1. Secure inference of every model per chunk of rows, each group at once
       (:func:`pgkernels.protocols.nn.forward`), and each model's prediction as
       the one-hot :func:`pgkernels.protocols.order.argmax` of its logits
       (``6 ceil(log2 C)`` rounds).
    2. Filter: ``correct_j = sum_rows <onehot_j, onehot(y)>`` as one Beaver
       matmul per validation chunk (1 round; integers, no truncation), and
       ``keep_j = [correct_j >= min_correct]`` with
       :func:`pgkernels.protocols.compare.ge` on ``bit_length(max(n_val, m)) +
       2`` bits. ``on_empty="raise"``: opens the single bit ``[no model kept]``
       (1 more comparison and an opening). ``on_empty="all"``:
       ``keep += 1 - [sum keep >= 1]`` on shares (nothing opened).
    3. Vote: ``votes = keep^T onehot`` (1 Beaver matmul per chunk, integers)
       and the ensemble's class, the argmax of the votes (ties to the lowest
       class; ``6 ceil(log2 C)`` rounds), opened once at the end.

    Reveals: the predicted class of every query row; with ``on_empty="raise"``
    whether any model passed; with ``reveal_selection`` every model's count of
    correct validation answers and the kept mask. Nothing else.

    Returns dict: ``none_kept`` (True when ``on_empty="raise"`` and no model
    passed: nothing else is computed), ``pred`` (int64 numpy (n,)), and with
    ``reveal_selection`` ``correct`` and ``keep`` (int64 numpy (m,), models in
    the groups' order).
    """
    import crypten

    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive int, got {chunk!r}")
    if on_empty not in ON_EMPTY:
        raise ValueError(f"on_empty must be one of {list(ON_EMPTY)}, got {on_empty!r}")
    n_val, C = Y_val.size()
    n = X.size(0)
    M = sum(g[0] for g in groups)

    def votes_of(rows):
        """One-hot predictions (M, r, C) of every model (groups' order), scale 1."""
        logits = [secure_nn.forward(rows, layers, Mg) for Mg, layers in groups]
        logits = logits[0] if len(logits) == 1 else crypten.cat(logits, dim=0)
        return argmax(logits, dim=-1)

    # filter: correct_j = <one-hot predictions of model j, one-hot labels>
    correct = None
    for i in range(0, n_val, chunk):
        P = votes_of(X_val[i:i + chunk])
        r = P.size(1)
        c = P.reshape(M, r * C).matmul(Y_val[i:i + r].reshape(r * C))
        correct = c if correct is None else correct + c
    bits = max(n_val, M).bit_length() + 2  # counts and their differences fit
    keep = ge(correct, min_correct, bits=bits)          # (M,) 0/1, scale 1
    if on_empty == "raise":
        # the one documented extra opening: does any model pass?
        if decode(lt(keep.sum(), 1, bits=bits)).item() == 1:
            return {"none_kept": True}
    else:
        # keep + [no model kept]: all ones when none passed, unchanged otherwise
        keep = keep + (1 - ge(keep.sum(), 1, bits=bits))
    preds = []
    for i in range(0, n, chunk):
        P = votes_of(X[i:i + chunk])
        r = P.size(1)
        V = keep.reshape(1, M).matmul(P.reshape(M, r * C)).reshape(r, C)   # kept models' votes
        preds.append(argmax(V, dim=-1, one_hot=False))
    out = {"none_kept": False}
    if preds:
        pred = preds[0] if len(preds) == 1 else crypten.cat(preds, dim=0)
        out["pred"] = decode(pred).round().long().numpy()
    else:
        out["pred"] = np.zeros(0, dtype=np.int64)
    if reveal_selection:
        out["correct"] = decode(correct).round().long().numpy()
        out["keep"] = decode(keep).round().long().numpy()
    return out


__all__ = ["ON_EMPTY", "EmptyEnsembleError", "SafeNetInputs", "check_inputs", "min_correct", "safenet_on_shares",
           "safenet_reference"]
