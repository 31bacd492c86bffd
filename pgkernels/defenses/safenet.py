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

:func:`safenet_reference` is the plaintext algorithm and :func:`safenet_mpc`
the same algorithm on secret shares, with identical semantics:

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

Models: ``torch.nn.Sequential`` stacks of ``Flatten``, ``Unflatten``,
``Linear``, ``ReLU``, ``Conv2d`` (no dilation, groups=1), ``MaxPool2d``
(kernel = stride, no padding), ``Dropout``/``Identity`` (inference: no-ops) --
what :mod:`pgkernels.fl.models` builds (``logreg``, ``mlp``, ``cnn``). Models
with the same architecture are evaluated as one batch: their first layers are
concatenated (one matmul or convolution of the shared inputs with all models'
weights), later linear layers become one batched matmul and later
convolutions one grouped convolution (``groups`` = number of models).
"""

import math
import time

import numpy as np
import torch
from torch import nn

from ..runtime.inputs import FRAC_BITS, share

ON_EMPTY = ("raise", "all")


class EmptyEnsembleError(ValueError):
    """No model reached the validation-accuracy threshold."""


# ----------------------------------------------------------------------------
# model parsing (shared by the reference's checks and the MPC forward)
# ----------------------------------------------------------------------------

def _leaf_layers(model):
    if isinstance(model, nn.Sequential):
        out = []
        for m in model:
            out += _leaf_layers(m)
        return out
    return [model]


def _layer_spec(layer, where):
    """(kind, hyper-parameters, [parameter tensors]) of one supported layer."""
    if isinstance(layer, (nn.Dropout, nn.Identity)):
        return None
    from ..models import Flatten as _Flatten2

    if isinstance(layer, (nn.Flatten, _Flatten2)):
        if isinstance(layer, nn.Flatten) and (layer.start_dim != 1 or layer.end_dim != -1):
            raise TypeError(f"{where}: only Flatten(start_dim=1, end_dim=-1) is supported")
        return ("flatten", (), [])
    if isinstance(layer, nn.Unflatten):
        if layer.dim != 1:
            raise TypeError(f"{where}: only Unflatten(1, shape) is supported")
        return ("unflatten", tuple(int(s) for s in layer.unflattened_size), [])
    if isinstance(layer, nn.Linear):
        if layer.bias is None:
            raise TypeError(f"{where}: Linear without bias is not supported")
        return ("linear", (layer.in_features, layer.out_features), [layer.weight, layer.bias])
    if isinstance(layer, nn.ReLU):
        return ("relu", (), [])
    if isinstance(layer, nn.Conv2d):
        if layer.groups != 1 or tuple(layer.dilation) != (1, 1) or layer.bias is None \
                or layer.padding_mode != "zeros" or isinstance(layer.padding, str):
            raise TypeError(f"{where}: only Conv2d with groups=1, dilation 1, numeric zero padding "
                            "and a bias is supported")
        hyper = (layer.in_channels, layer.out_channels, tuple(layer.kernel_size),
                 tuple(layer.stride), tuple(layer.padding))
        return ("conv", hyper, [layer.weight, layer.bias])
    if isinstance(layer, nn.MaxPool2d):
        k = layer.kernel_size if isinstance(layer.kernel_size, int) else layer.kernel_size[0]
        ks = (layer.kernel_size,) * 2 if isinstance(layer.kernel_size, int) else tuple(layer.kernel_size)
        st = (layer.stride,) * 2 if isinstance(layer.stride, int) else tuple(layer.stride)
        pad = layer.padding if isinstance(layer.padding, int) else max(layer.padding)
        if ks != (k, k) or st != ks or pad != 0 or layer.dilation not in (1, (1, 1)) or layer.ceil_mode:
            raise TypeError(f"{where}: only MaxPool2d with a square kernel equal to its stride, "
                            "no padding and floor mode is supported")
        return ("maxpool", (k,), [])
    raise TypeError(f"{where}: layer {type(layer).__name__} is not supported by SafeNet's secure "
                    "inference (use the Linear/ReLU/Conv2d/MaxPool2d/Flatten models of pgkernels.fl.models)")


def _parse(model, j):
    if not isinstance(model, nn.Module):
        raise TypeError(f"models[{j}] must be a torch.nn.Module, got {type(model).__name__}")
    specs = []
    for i, layer in enumerate(_leaf_layers(model)):
        s = _layer_spec(layer, f"models[{j}] layer {i}")
        if s is not None:
            specs.append(s)
    if not any(k in ("linear", "conv") for k, _, _ in specs):
        raise TypeError(f"models[{j}] has no Linear or Conv2d layer")
    for k, _, params in specs:
        for p in params:
            if not torch.isfinite(p.detach()).all():
                raise ValueError(f"models[{j}] has NaN or inf parameters")
    return specs


def _signature(specs):
    return tuple((k, h) for k, h, _ in specs)


@torch.no_grad()
def _logits_plain(model, X, batch_size=8192):
    """float64 logits of a copy of ``model`` (eval mode) on the flat rows X."""
    import copy

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


def _check(models, X_val, y_val, X, threshold, classes, on_empty):
    if isinstance(models, nn.Module) or not hasattr(models, "__len__"):
        raise TypeError("models must be a list of torch.nn.Module (one per data owner)")
    models = list(models)
    if not models:
        raise ValueError("models is empty: SafeNet needs at least one owner's model")
    specs = [_parse(m, j) for j, m in enumerate(models)]
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
    return models, specs, X_val, y_val, X, threshold, num_classes


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
    models, _, X_val, y_val, X, threshold, C = _check(models, X_val, y_val, X, threshold, classes, on_empty)
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
# MPC
# ----------------------------------------------------------------------------

def _stack_params(specs_group):
    """Per layer, the group's stacked float64 parameters in the batched layouts
    the MPC forward uses (see :func:`_forward`)."""
    out = []
    first = True
    for li, (kind, hyper, _) in enumerate(specs_group[0]):
        if kind not in ("linear", "conv"):
            out.append(None)
            continue
        Ws = [s[li][2][0].detach().double() for s in specs_group]
        bs = [s[li][2][1].detach().double() for s in specs_group]
        if kind == "linear":
            if first:   # (d, M * out): one matmul of the shared rows with every model
                W = torch.cat([w.T for w in Ws], dim=1)
                b = torch.cat(bs)
            else:       # (M, in, out): one batched matmul
                W = torch.stack([w.T for w in Ws])
                b = torch.stack(bs).unsqueeze(1)
        else:           # (M * c_out, c_in, k, k): concatenated / grouped convolution
            W = torch.cat(Ws)
            b = torch.cat(bs)
        out.append((W, b))
        first = False
    return out


def _forward(x, layers, M):
    """Logits (M, n, C) of a group of M same-architecture models on shared rows x (n, d).

    States: "plain" -- the shared input without a model dimension; "lin" --
    (M, n, f); "conv" -- (n, M * c, H, W), the models' channels side by side.
    """
    import pgkernels

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
            x = pgkernels.relu(x)
        elif kind == "maxpool":
            k = hyper[0]
            if x.dim() != 4:
                raise TypeError("MaxPool2d needs (n, channels, H, W) inputs")
            n, c, H, Wd = x.size()
            h, w = H // k, Wd // k
            x = x[:, :, :h * k, :w * k].reshape(n, c, h, k, w, k).permute(0, 1, 2, 4, 3, 5)
            x = pgkernels.max(x.reshape(n, c, h, w, k * k), dim=-1)
    if state != "lin":
        raise TypeError("the models must end with a Linear layer giving the class scores")
    return x


def _load_party_inputs(data):
    from ..runtime.inputs import to_mpc

    groups = []
    for g in data["groups"]:
        layers = []
        for kind, hyper, p in g["layers"]:
            layers.append((kind, hyper, None if p is None else (to_mpc(p[0]), to_mpc(p[1]))))
        groups.append((g["M"], layers))
    return groups, to_mpc(data["X_val"]), to_mpc(data["Y_val"]), to_mpc(data["X"])


def _party(meta, party_input):
    """Runs in every compute party: expand its own shares, run SafeNet, open the outputs."""
    import crypten

    import pgkernels

    groups, X_val, Y_val, X = _load_party_inputs(party_input)
    del party_input
    pgkernels.reset_stats()
    t0 = time.perf_counter()
    chunk, C, n_val, n = meta["chunk"], meta["classes"], meta["n_val"], meta["n"]
    M = sum(g[0] for g in groups)

    def votes_of(rows):
        """One-hot predictions (M, r, C) of every model (internal order), scale 1."""
        logits = [_forward(rows, layers, Mg) for Mg, layers in groups]
        logits = logits[0] if len(logits) == 1 else crypten.cat(logits, dim=0)
        return pgkernels.argmax(logits, dim=-1)

    # filter: correct_j = <one-hot predictions of model j, one-hot labels>
    correct = None
    for i in range(0, n_val, chunk):
        P = votes_of(X_val[i:i + chunk])
        r = P.size(1)
        c = P.reshape(M, r * C).matmul(Y_val[i:i + r].reshape(r * C))
        correct = c if correct is None else correct + c
    bits = max(n_val, M).bit_length() + 2  # counts and their differences fit
    keep = pgkernels.ge(correct, meta["min_correct"], bits=bits)          # (M,) 0/1, scale 1
    if meta["on_empty"] == "raise":
        # the one documented extra opening: does any model pass?
        if pgkernels.decode(pgkernels.lt(keep.sum(), 1, bits=bits)).item() == 1:
            return {"none_kept": True, "stats": pgkernels.comm_stats().as_dict(),
                    "seconds": time.perf_counter() - t0}
    else:
        # keep + [no model kept]: all ones when none passed, unchanged otherwise
        keep = keep + (1 - pgkernels.ge(keep.sum(), 1, bits=bits))
    preds = []
    for i in range(0, n, chunk):
        P = votes_of(X[i:i + chunk])
        r = P.size(1)
        V = keep.reshape(1, M).matmul(P.reshape(M, r * C)).reshape(r, C)   # kept models' votes
        preds.append(pgkernels.argmax(V, dim=-1, one_hot=False))
    out = {"none_kept": False}
    if preds:
        pred = preds[0] if len(preds) == 1 else crypten.cat(preds, dim=0)
        out["pred"] = pgkernels.decode(pred).round().long().numpy()
    else:
        out["pred"] = np.zeros(0, dtype=np.int64)
    if meta["reveal_selection"]:
        out["correct"] = pgkernels.decode(correct).round().long().numpy()
        out["keep"] = pgkernels.decode(keep).round().long().numpy()
    out["seconds"] = time.perf_counter() - t0
    out["stats"] = pgkernels.comm_stats().as_dict()
    return out


def safenet_mpc(models, X_val, y_val, X, threshold=0.5, world_size=2, classes=None, on_empty="raise",
                reveal_selection=False, chunk=4096, timeout=3600.0, threads=1):
    """SafeNet on secret shares: secure inference of every owner's model, filtering
    by validation accuracy and a secure majority vote; reveals only the predictions.

    Same semantics and arguments as :func:`safenet_reference`, plus the session's
    ``world_size`` (compute parties; a dealer process supplies all correlated
    randomness), ``reveal_selection``, ``chunk`` (rows evaluated per batch),
    ``timeout`` (seconds) and ``threads`` (torch threads per party).

    Sharing: the caller plays the data owners -- it encodes every model's
    parameters, the validation rows, the one-hot validation labels and the
    queries in fixed point (16 fractional bits; NaN/inf and magnitudes >= 2^30
    refused) and splits them into additive shares mod 2^64 with
    :mod:`pgkernels.runtime.inputs` (party ``i >= 1`` gets fresh AES-CTR keys,
    party 0 the encodings minus those streams); compute party i's process
    receives only its own shares, never the models or data in the clear.

    Protocol (all on shares; ``C`` classes, ``m`` models, rows in chunks):

    1. Secure inference, per chunk of rows, all models of one architecture at
       once: the first layer is one Beaver matmul / convolution of the shared
       rows with the concatenated weights of all models, later layers batched
       matmuls / grouped convolutions (1 round each, opening the masked
       operands: ``8 (rows x features + weights)`` bytes per party, with
       CrypTen's truncation, local for 2 parties and its wraps protocol from
       the dealer for more); ReLU is :func:`pgkernels.relu` (6 rounds, 13.25
       bytes per element for 2 parties); 2x2 max pooling
       :func:`pgkernels.max` (2 tournament levels, 12 rounds).
    2. Each model's prediction: :func:`pgkernels.argmax` of its logits over
       the classes, one-hot (``6 ceil(log2 C)`` rounds).
    3. Filter: ``correct_j = sum_rows <onehot_j, onehot(y)>`` as one Beaver
       matmul per validation chunk (1 round; integers, no truncation), and
       ``keep_j = [correct_j >= ceil(threshold * n_val)]`` with
       :func:`pgkernels.ge` on ``bit_length(n_val) + 2`` bits (a few rounds).
       ``on_empty="raise"``: opens the single bit ``[no model kept]`` (1 more
       comparison and an opening) and raises :class:`EmptyEnsembleError` when
       it is 1. ``on_empty="all"``: ``keep += 1 - [sum keep >= 1]`` on shares
       (nothing opened).
    4. Vote: ``votes = keep^T onehot`` (1 Beaver matmul per chunk, integers)
       and the ensemble's class :func:`pgkernels.argmax` of the votes (ties to
       the lowest class; ``6 ceil(log2 C)`` rounds), opened once at the end.

    Rounds: per chunk of rows about ``(1 + 6) * linear/conv layers + 12 *
    pools + 6 ceil(log2 C) + 1`` plus one opening; bytes are dominated by the
    first layer's masked rows (8 bytes per feature per row per party for 2
    parties) and the ReLUs (13.25 bytes per hidden unit per model per row).
    The measured totals are returned. Measured (2 parties, this 2-core host
    shared with other jobs): 10 MNIST MLPs 784-512-10, 1,000 validation rows
    and 19,020 queries: 81 s, 2.6 GB sent per party, 330 rounds.

    Fixed point: the models run on 16 fractional bits, and two-party
    truncation (CrypTen's, local) is off by 2^48 with probability about
    ``|x| 2^-32`` per product entry x (about 2e-9 for |x| = 10). Such an
    error turns one model's vote on one row; logits closer than about 1e-4
    may also be ranked differently than in float64.

    Reveals: the ensemble's predicted class for every query row -- nothing
    else by default: not the models, their predictions, the validation data,
    the accuracies or which models were kept. ``on_empty="raise"`` also
    reveals whether at least one model passed. ``reveal_selection=True`` also
    opens every model's validation count (so ``val_acc``) and the kept mask
    (``kept``), as the lab's detection metrics need; otherwise those entries
    are None.

    Returns dict: ``pred`` (int64 (n,)), ``kept`` (list of kept model indices,
    or None), ``val_acc`` (float (m,) or None), ``fallback`` (as in the
    reference, or None), ``seconds`` (MPC time at party
    0, shares loaded), ``wall_seconds`` (including start-up and sharing),
    ``bytes`` (list: bytes sent by each party), ``dealer_bytes`` (list, bytes
    each party received from the dealer), ``rounds`` (party 0).
    """
    import pgkernels

    models, specs, X_val, y_val, X, threshold, C = _check(models, X_val, y_val, X, threshold, classes, on_empty)
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 2:
        raise ValueError(f"world_size must be an int >= 2, got {world_size!r}")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive int, got {chunk!r}")
    t_wall = time.perf_counter()
    # group the models by architecture; internal order = concatenated groups
    by_sig = {}
    for j, s in enumerate(specs):
        by_sig.setdefault(_signature(s), []).append(j)
    order = [j for idx in by_sig.values() for j in idx]
    Y_val = np.eye(C, dtype=np.float64)[y_val]
    shares = [dict(groups=[]) for _ in range(world_size)]
    for key, a, bits in (("X_val", X_val, FRAC_BITS), ("X", X, FRAC_BITS), ("Y_val", Y_val, 0)):
        for r, sh in enumerate(share(a, world_size, key, bits)):
            shares[r][key] = sh
    for gi, (sig, idx) in enumerate(by_sig.items()):
        stacked = _stack_params([specs[j] for j in idx])
        per_rank = [[] for _ in range(world_size)]
        for li, ((kind, hyper), p) in enumerate(zip(sig, stacked)):
            if p is None:
                for r in range(world_size):
                    per_rank[r].append((kind, hyper, None))
                continue
            Ws = share(p[0], world_size, f"models' {kind} weights")
            bs = share(p[1], world_size, f"models' {kind} biases")
            for r in range(world_size):
                per_rank[r].append((kind, hyper, (Ws[r], bs[r])))
        for r in range(world_size):
            shares[r]["groups"].append({"M": len(idx), "layers": per_rank[r]})
    meta = {"chunk": chunk, "classes": C, "n_val": len(X_val), "n": len(X),
            "min_correct": min_correct(threshold, len(X_val)), "on_empty": on_empty,
            "reveal_selection": bool(reveal_selection)}
    # party r's process receives only shares[r] (launch's party_inputs)
    res = pgkernels.launch(_party, world_size=world_size, args=(meta,), timeout=timeout, threads=threads,
                           party_inputs=shares)
    del shares
    r0 = res[0]
    if r0["none_kept"]:
        raise EmptyEnsembleError(f"no model reaches validation accuracy {threshold} "
                                 f"(needs {meta['min_correct']} of {len(X_val)} validation rows correct)")
    kept = val_acc = fallback = None
    if reveal_selection:
        keep = np.zeros(len(models), dtype=bool)
        correct = np.zeros(len(models), dtype=np.int64)
        keep[order] = r0["keep"].astype(bool)
        correct[order] = r0["correct"]
        val_acc = correct / len(X_val)
        fallback = bool(keep.all() and (correct < meta["min_correct"]).all())
        kept = [] if fallback else [int(j) for j in np.flatnonzero(keep)]
    return {"pred": np.asarray(r0["pred"], dtype=np.int64), "kept": kept, "val_acc": val_acc, "fallback": fallback,
            "seconds": r0["seconds"], "wall_seconds": time.perf_counter() - t_wall,
            "bytes": [r["stats"]["bytes_sent"] for r in res],
            "dealer_bytes": [r["stats"]["dealer_bytes"] for r in res],
            "rounds": r0["stats"]["rounds"]}
