"""Pooled training with and without Hayes & Ohrimenko's adversarial defense (plaintext).

Hayes & Ohrimenko (NeurIPS 2018, "Contamination attacks and mitigation in
multi-party machine learning") defend a model ``f`` trained on the pooled
data of several owners by training it against an adversary ``g`` that tries
to tell, from ``f``'s output, which owner a record came from. A contaminating
owner's records teach ``f`` a trend that only that owner's data has; when
``f`` is kept from carrying owner-specific trends (``g`` cannot do better than
guessing), the contamination is not learned, and the owners also get
party-level membership privacy.

The algorithm (the same one :func:`pgkernels.train.mpc.train_mpc` runs on
secret shares), for every minibatch of the pooled data, in a fixed order:

1. ``p = softmax(f(x))``;
2. ``g_steps`` SGD steps of ``g`` on ``CE(g(p), party)``, with ``p`` held
   fixed: ``g`` predicts the owner from ``f``'s output alone (with
   ``adversary_label=True`` it also sees the one-hot label, like the
   membership adversary of Nasr et al.; on Adult that adversary mostly
   learns the owners' label mix, which ``f`` cannot change, and the defense
   is weaker, so it is off by default);
3. one SGD step of ``f`` on ``CE(f(x), y) + c * A``, the gradient of ``A``
   reaching ``f`` through ``g`` (whose parameters this step leaves alone):
   * ``variant="onehot"`` (the paper's f'): ``A = -CE(g(p), party)``, so
     ``f`` maximises ``g``'s loss on the true party (one-hot target);
   * ``variant="uniform"`` (the paper's f''): ``A = CE(g(p), 1/P)``, so
     ``f`` pushes ``g``'s prediction towards the uniform distribution over
     the ``P`` parties.

``defense="none"`` is step 1 and the ``CE(f(x), y)`` part of step 3 alone:
plain pooled training, the undefended joint model. :func:`train_local_models`
trains each owner's model on its own records only (the local-model baseline
the paper compares against, and the rule under which an owner accepts the
joint model).

Models are the fully connected ReLU networks of :func:`pgkernels.models.mlp`
(``hidden=()`` gives multinomial logistic regression), initialised from the
seed; minibatches follow one seeded permutation per epoch; the optimiser is
SGD with optional momentum (torch's and CrypTen's updates are the same
formula). Everything is deterministic given the seed.
"""

import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from ..models import mlp

DEFENSES = ("none", "advtrain")
VARIANTS = ("onehot", "uniform")

# Defaults: a small network that trains Adult to ~85% in 5 epochs; larger batches
# mean fewer MPC rounds per epoch (see pgkernels.train.mpc). Callers override them.
DEFAULTS = dict(defense="none", c=1.0, variant="onehot", hidden=(32,), g_hidden=(32,), epochs=5,
                batch_size=128, lr=0.2, g_lr=None, momentum=0.0, g_steps=1, adversary_label=False)


def check_hyperparams(defense="none", c=1.0, variant="onehot", hidden=(), g_hidden=(), epochs=1,
                     batch_size=1, lr=0.1, g_lr=None, momentum=0.0, g_steps=1, **_ignored):
    """Validate the training hyperparameters alone (before any data is loaded);
    ValueError naming the offending argument."""
    if defense not in DEFENSES:
        raise ValueError(f"defense must be one of {list(DEFENSES)}, got {defense!r}")
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {list(VARIANTS)}, got {variant!r}")
    if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c) or c < 0:
        raise ValueError(f"c must be a finite number >= 0, got {c!r}")
    for name, v in (("epochs", epochs), ("batch_size", batch_size), ("g_steps", g_steps)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < (0 if name == "epochs" else 1):
            raise ValueError(f"{name} must be an int >= {0 if name == 'epochs' else 1}, got {v!r}")
    for name, v in (("lr", lr), ("g_lr", lr if g_lr is None else g_lr)):
        if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
    if not isinstance(momentum, (int, float)) or not 0 <= momentum < 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    for name, h in (("hidden", hidden), ("g_hidden", g_hidden)):
        if any(isinstance(w, bool) or not isinstance(w, (int, np.integer)) or w < 1 for w in h):
            raise ValueError(f"{name} must be a sequence of positive ints, got {h!r}")


def check_inputs(X, y, party, num_parties, classes, defense="none", c=1.0, variant="onehot",
                 hidden=(), g_hidden=(), epochs=1, batch_size=1, lr=0.1, g_lr=None, momentum=0.0,
                 g_steps=1):
    """Validate and normalise the training arguments.

    Returns ``(X, y, party, num_classes)`` with X as float32 ``(N, d)``
    (images are flattened), y and party as int64. Raises ValueError/TypeError
    naming the offending argument.
    """
    check_hyperparams(defense, c, variant, hidden, g_hidden, epochs, batch_size, lr, g_lr, momentum, g_steps)
    if isinstance(classes, (int, np.integer)):
        num_classes = int(classes)
    else:
        try:
            num_classes = len(classes)
        except TypeError:
            raise TypeError(f"classes must be a list of class names or an int, got {classes!r}")
    if num_classes < 2:
        raise ValueError(f"classes must name at least 2 classes, got {num_classes}")
    if isinstance(num_parties, bool) or not isinstance(num_parties, (int, np.integer)) or num_parties < 1:
        raise ValueError(f"num_parties must be an int >= 1, got {num_parties!r}")
    if defense == "advtrain" and num_parties < 2:
        raise ValueError("defense='advtrain' needs num_parties >= 2 (the adversary tells parties apart)")
    X = np.asarray(X, dtype=np.float32)
    if X.ndim < 2 or len(X) == 0:
        raise ValueError(f"X must have shape (N, d) with N >= 1, got {X.shape}")
    X = X.reshape(len(X), -1)
    if not np.isfinite(X).all():
        raise ValueError("X contains NaN or infinite values")
    y = np.asarray(y)
    party = np.asarray(party)
    if y.shape != (len(X),):
        raise ValueError(f"y must have shape ({len(X)},) to match X, got {y.shape}")
    if party.shape != (len(X),):
        raise ValueError(f"party must have shape ({len(X)},) to match X, got {party.shape}")
    for name, v, hi in (("y", y, num_classes), ("party", party, int(num_parties))):
        if v.dtype.kind == "f":
            if not np.isfinite(v).all() or (v != np.round(v)).any():
                raise ValueError(f"{name} must hold integers")
        elif v.dtype.kind not in "iub":
            raise TypeError(f"{name} must be an integer array, got dtype {v.dtype}")
        if v.min() < 0 or v.max() >= hi:
            raise ValueError(f"{name} values must lie in [0, {hi}), got range [{v.min()}, {v.max()}]")
    return X, y.astype(np.int64), party.astype(np.int64), num_classes


def build_models(d, num_classes, num_parties, hidden, g_hidden, adversary_label=True, seed=0,
                 defense="advtrain"):
    """``f`` (d -> classes) and, for advtrain, ``g`` (f's output [+ label] -> parties).

    Initialised from ``torch.manual_seed(seed)`` (f first, then g); the global
    torch generator is restored afterwards.
    """
    state = torch.random.get_rng_state()
    torch.manual_seed(int(seed))
    try:
        f = mlp(d, num_classes, tuple(hidden))
        g = None
        if defense == "advtrain":
            g_in = num_classes * (2 if adversary_label else 1)
            g = mlp(g_in, num_parties, tuple(g_hidden))
    finally:
        torch.random.set_rng_state(state)
    return f, g


def batch_order(n, batch_size, epochs, seed=0):
    """Per epoch, the list of minibatch index arrays: one seeded permutation per
    epoch cut into consecutive batches (the last one may be smaller)."""
    rng = np.random.RandomState(int(seed))
    out = []
    for _ in range(int(epochs)):
        perm = rng.permutation(n)
        out.append([perm[i:i + batch_size] for i in range(0, n, batch_size)])
    return out


def adversary_sign(variant):
    """+1 / -1 factor of ``c * CE(g, target)`` in f's objective."""
    return -1.0 if variant == "onehot" else 1.0


def _bar(total, desc, progress):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="batch", leave=False)


def train_plaintext(X, y, party, num_parties, classes, defense="none", c=1.0, variant="onehot",
                    hidden=DEFAULTS["hidden"], g_hidden=DEFAULTS["g_hidden"], epochs=DEFAULTS["epochs"],
                    batch_size=DEFAULTS["batch_size"], lr=DEFAULTS["lr"], g_lr=None,
                    momentum=DEFAULTS["momentum"], g_steps=DEFAULTS["g_steps"],
                    adversary_label=DEFAULTS["adversary_label"], seed=0, progress=True, record_weights=None):
    """Train the pooled model ``f`` in plaintext torch (see the module docstring).

    Args:
        X, y, party: the pooled records ``(N, d)``, labels in ``[0, len(classes))``
            and owner ids in ``[0, num_parties)``.
        defense: "none" (plain pooled training) or "advtrain".
        c: weight of the adversary's term in f's objective (>= 0).
        variant: "onehot" (f maximises g's loss on the true party) or "uniform"
            (f drives g's output to the uniform distribution).
        hidden, g_hidden: hidden widths of f and g; epochs, batch_size, lr,
            momentum: SGD on f; g_lr (default lr), g_steps: g's SGD steps per
            minibatch; adversary_label: g also sees the one-hot label.
        seed: initialisation and minibatch order.
        record_weights: optional per-record weights (N,) of the loss, e.g. a
            0/1 mask of the records to keep: a minibatch's loss is
            ``sum_i w_i CE_i / B`` (the MPC retraining's semantics,
            :func:`pgkernels.train.mpc.detect_and_retrain_mpc`).

    Returns:
        ``(f, stats)``: the trained ``torch.nn.Module`` (logits) and a dict with
        ``seconds``, per-epoch mean ``loss_f`` and, for advtrain, ``loss_g`` and
        ``g_accuracy`` (g's accuracy on the minibatches before its step: how
        well the party can be told from f's output during training).
    """
    X, y, party, K = check_inputs(X, y, party, num_parties, classes, defense, c, variant, hidden,
                                  g_hidden, epochs, batch_size, lr, g_lr, momentum, g_steps)
    P = int(num_parties)
    g_lr = lr if g_lr is None else g_lr
    f, g = build_models(X.shape[1], K, P, hidden, g_hidden, adversary_label, seed, defense)
    opt_f = torch.optim.SGD(f.parameters(), lr=lr, momentum=momentum)
    opt_g = torch.optim.SGD(g.parameters(), lr=g_lr, momentum=momentum) if g is not None else None
    sign = adversary_sign(variant)
    Xt = torch.from_numpy(X)
    Y1 = F.one_hot(torch.from_numpy(y), K).float()
    P1 = F.one_hot(torch.from_numpy(party), P).float()
    uniform = torch.full((1, P), 1.0 / P)
    schedule = batch_order(len(X), batch_size, epochs, seed)
    W = None
    if record_weights is not None:
        W = torch.as_tensor(np.asarray(record_weights, dtype=np.float32))
        if W.shape != (len(X),) or not torch.isfinite(W).all():
            raise ValueError(f"record_weights must be {len(X)} finite numbers, got shape {tuple(W.shape)}")
    stats = {"defense": defense, "epochs": []}
    bar = _bar(sum(len(b) for b in schedule), f"train f ({defense})", progress)
    t0 = time.perf_counter()
    f.train()
    for batches in schedule:
        sums = {"loss_f": 0.0, "loss_g": 0.0, "g_correct": 0.0}
        for idx in batches:
            it = torch.from_numpy(idx)
            xb, yb, pb = Xt[it], Y1[it], P1[it]
            logits = f(xb)
            prob = torch.softmax(logits, dim=1)
            if W is None:
                loss = F.cross_entropy(logits, yb)
            else:
                loss = (F.cross_entropy(logits, yb, reduction="none") * W[it]).sum() / len(idx)
            sums["loss_f"] += float(loss.detach()) * len(idx)
            if g is not None:
                gin = torch.cat([prob, yb], 1) if adversary_label else prob
                for _ in range(g_steps):
                    g_logits = g(gin.detach())
                    loss_g = F.cross_entropy(g_logits, pb)
                    opt_g.zero_grad()
                    loss_g.backward()
                    opt_g.step()
                sums["loss_g"] += float(loss_g.detach()) * len(idx)
                sums["g_correct"] += float((g_logits.argmax(1) == pb.argmax(1)).sum())
                g_logits = g(gin)
                target = pb if variant == "onehot" else uniform.expand_as(pb)
                loss = loss + sign * c * F.cross_entropy(g_logits, target)
            opt_f.zero_grad()
            loss.backward()
            opt_f.step()
            if bar is not None:
                bar.update(1)
        n = len(X)
        ep = {"loss_f": sums["loss_f"] / n}
        if g is not None:
            ep.update(loss_g=sums["loss_g"] / n, g_accuracy=sums["g_correct"] / n)
        stats["epochs"].append(ep)
    if bar is not None:
        bar.close()
    f.eval()
    stats["seconds"] = time.perf_counter() - t0
    return f, stats


def train_local_models(data, progress=True, **hyperparams):
    """Each owner's local model: ``f`` trained (defense "none") on that owner's
    records of ``data`` (a :class:`pgkernels.data.parties.PartyData`) alone.

    ``hyperparams``: those of :func:`train_plaintext` (``defense``, ``c``,
    ``variant`` and ``g_*`` are ignored: a single owner has no one to hide
    from). Owner ``p`` uses seed ``seed + p`` for its minibatch order and
    initialisation. Returns the list of ``num_parties`` torch modules.
    """
    hp = dict(hyperparams)
    for k in ("defense", "c", "variant", "g_hidden", "g_lr", "g_steps", "adversary_label"):
        hp.pop(k, None)
    seed = int(hp.pop("seed", 0))
    party = np.asarray(data.party)
    P = int(data.num_parties)
    models = []
    it = range(P)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="local models", unit="party", leave=False)
    for p in it:
        mask = party == p
        if not mask.any():
            raise ValueError(f"party {p} has no records in data")
        f, _ = train_plaintext(np.asarray(data.X)[mask], np.asarray(data.y)[mask], np.zeros(int(mask.sum()), np.int64),
                               1, data.classes, defense="none", seed=seed + p, progress=False, **hp)
        models.append(f)
    return models
