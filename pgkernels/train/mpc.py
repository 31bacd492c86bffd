"""Pooled training inside MPC, with or without the adversarial defense.

:func:`train_mpc` runs exactly the algorithm of
:func:`pgkernels.train.advtrain.train_plaintext` (same initial weights from
the seed, same minibatches in the same order, same SGD update) on secret
shares, so on a small instance the two agree up to fixed-point and
approximation error. The trained ``f`` is the computation's output and is
revealed; nothing else is.

Setting. The data owners secret-share their records (features, one-hot
labels and one-hot owner ids) with the ``world_size`` compute parties, which
hold only arithmetic shares mod 2^64 (CrypTen's encoding, 16 fractional
bits); a dealer process that no compute party controls supplies the
correlated randomness (Beaver triples, comparison masks). The caller plays
the owners: it encodes the records and splits them with
:mod:`pgkernels.runtime.inputs` (party ``r >= 1`` receives a 16-byte AES-CTR
key, party 0 the records minus those streams), and each compute party's
process receives only its own share; no party process ever sees the
plaintext records, labels or owner ids. In a deployment each owner sends the
same shares to the parties over authenticated channels.

Protocol, per minibatch of B rows (``f``: Linear/ReLU layers ``d -> h... -> K``;
``g``: ``K (+K) -> h_g... -> P``):

1. Forward of ``f`` (a ``crypten.nn.Sequential`` of ``crypten.nn.Module``
   layers, recorded by CrypTen's autograd): linear layers (Beaver matmuls,
   1 round each; their backward skips the data batch's gradient) and ReLU
   layers whose mask ``[z > 0]`` comes from :func:`pgkernels.gt` (6 rounds,
   ~13 bytes per element for 2 parties, against CrypTen's 8 rounds and 216
   bytes) times ``z`` (1 round).
2. ``p = softmax(logits)`` (:func:`_softmax_rows`): row maximum with
   :func:`pgkernels.max` (6 rounds per level of ``ceil(log2 K)``), CrypTen's
   ``exp`` (8 squarings) and Newton steps for the reciprocal of the row sum
   (2 rounds each; 3 steps for K = 2, 5 for K = 10): about 22 rounds for
   K = 2 and 44 for K = 10. The gradient of ``CE(f(x), y)`` with respect to
   the logits is ``(p - y) / B``: no logarithm is needed.
3. advtrain: ``g_steps`` times, forward ``g`` on ``p`` (and ``y``), its softmax
   ``q``, backward from ``(q - party) / B`` through ``g`` and an SGD step of
   ``g``. Then forward ``g`` again on ``p`` as a leaf that needs a gradient,
   backward from ``s c (q - t) / B`` (``t`` the one-hot party and ``s = -1``
   for the "onehot" variant, ``t = 1/P`` and ``s = +1`` for "uniform"), which
   gives ``v = dA/dp``; the softmax Jacobian turns it into the logits'
   gradient ``p * (v - sum(p * v))`` (2 multiplications), added to step 2's.
4. Backward of ``f`` from the logits' gradient (CrypTen autograd: matmuls and
   the saved ReLU masks), then CrypTen's SGD step (``crypten.optim.SGD``,
   momentum as in torch). Before each step, gradient entries of magnitude
   >= 100 are zeroed, as CrypTen's own ``update_parameters`` does: two-party
   truncation fails with probability about ``|x| / 2^64`` per element and
   would otherwise plant a huge value in a weight; honest gradients here are
   orders of magnitude below the threshold, so this only ever changes a
   corrupted entry (one batched :func:`pgkernels.lt` over all parameters and
   their negations, 6 rounds, plus 2 rounds of multiplications). Plaintext
   training does not clip; how many entries MPC training zeroed is counted
   (a shared counter, opened once at the end) and returned in the stats as
   ``grad_entries_zeroed`` (for ``f`` and ``g``) next to ``grad_entries``.

Measured on Adult (d = 104, f 104-32-2, g 2-32-10, B = 128, 2 parties on
one host): ``none`` 42 rounds between the parties (69 with the online dealer
round trips counted) and 0.69 MB sent per party per minibatch, ``advtrain``
135 rounds between the parties and 1.85 MB; the stats returned give ``seconds``,
``bytes`` sent per party and ``rounds`` at party 0 for every run.

Detection (issue 16): :func:`detect_and_retrain_mpc` trains f, takes the
records' penultimate-layer activations on the shares (:func:`penultimate`),
runs a detector of :mod:`pgkernels.defenses.detection` and retrains with a
secret per-record mask, in one session; :func:`strip_mpc` runs STRIP on
shared queries. Their docstrings say what each reveals.

Revealed: the final parameters of ``f`` (the output), to every compute party
(which pass it to the owners). Also public, as in any training run: the
architecture, hyperparameters, record count, the owner count and the seeded
minibatch order (which depends only on the seed and N, not on the data).
Nothing computed from the data is opened during training: losses, ``g``'s
accuracy and ``g`` itself stay shared. After training, one integer per model
is opened: the total number of gradient entries zeroed by the threshold
(normally 0; it shows whether the clipping changed the training).
"""

import time

import numpy as np
import torch

from . import advtrain as _adv

GRAD_THRESHOLD = 100.0


def train_mpc(X, y, party, num_parties, classes, defense="none", c=1.0, variant="onehot",
              hidden=_adv.DEFAULTS["hidden"], g_hidden=_adv.DEFAULTS["g_hidden"],
              epochs=_adv.DEFAULTS["epochs"], batch_size=_adv.DEFAULTS["batch_size"],
              lr=_adv.DEFAULTS["lr"], g_lr=None, momentum=_adv.DEFAULTS["momentum"],
              g_steps=_adv.DEFAULTS["g_steps"], adversary_label=_adv.DEFAULTS["adversary_label"],
              seed=0, progress=True, world_size=2, timeout=None):
    """Train the pooled model ``f`` in MPC (see the module docstring for the protocol).

    Arguments as :func:`pgkernels.train.advtrain.train_plaintext`, plus
    ``world_size`` (compute parties, >= 2) and ``timeout`` (seconds for the
    whole session; default: generous, from the number of minibatches).

    Returns:
        ``(f, stats)``: the revealed ``torch.nn.Module`` and a dict with
        ``seconds`` (training wall time at party 0, data sharing included),
        ``bytes`` (list: bytes sent by each compute party), ``dealer_bytes``
        (list: bytes each received from the dealer), ``rounds`` (at party 0),
        ``world_size``, ``batches``, ``defense``, ``grad_entries_zeroed``
        (``{"f": int, "g": int or None}``: gradient entries the |g| >= 100
        threshold zeroed over the whole run, which plaintext training does
        not do) and ``grad_entries`` (the entries checked, same keys).
    """
    X, y, party, K = _adv.check_inputs(X, y, party, num_parties, classes, defense, c, variant, hidden,
                                       g_hidden, epochs, batch_size, lr, g_lr, momentum, g_steps)
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 2:
        raise ValueError(f"world_size must be an int >= 2, got {world_size!r}")
    P = int(num_parties)
    f, g = _adv.build_models(X.shape[1], K, P, hidden, g_hidden, adversary_label, seed, defense)
    schedule = _adv.batch_order(len(X), batch_size, epochs, seed)
    nbatches = sum(len(b) for b in schedule)
    if timeout is None:
        timeout = 600.0 + 5.0 * nbatches * (1 + (g_steps + 1) * (g is not None))
    # the owners' records, labels and owner ids, as one share per compute party
    private = {"X": X, "Y": np.eye(K, dtype=np.float64)[y]}
    if defense == "advtrain":
        private["P"] = np.eye(P, dtype=np.float64)[party]
    from ..runtime.inputs import share_all

    party_inputs = share_all(private, world_size)
    job = dict(P=P, defense=defense, c=float(c), variant=variant,
               f_state={k: v.detach().clone() for k, v in f.state_dict().items()},
               g_state=None if g is None else {k: v.detach().clone() for k, v in g.state_dict().items()},
               schedule=schedule, lr=float(lr), g_lr=float(lr if g_lr is None else g_lr),
               momentum=float(momentum), g_steps=int(g_steps), adversary_label=bool(adversary_label),
               progress=bool(progress))
    from ..runtime.launch import launch

    results = launch(_party_train, world_size=world_size, timeout=timeout, kwargs={"job": job},
                     party_inputs=party_inputs)
    f.load_state_dict({k: v.to(torch.float32) for k, v in results[0]["f_state"].items()})
    f.eval()
    stats = {
        "defense": defense,
        "world_size": world_size,
        "batches": nbatches,
        "seconds": results[0]["seconds"],
        "bytes": [r["bytes_sent"] for r in results],
        "dealer_bytes": [r["dealer_bytes"] for r in results],
        "rounds": results[0]["rounds"],
        "grad_entries_zeroed": results[0]["grad_entries_zeroed"],
        "grad_entries": results[0]["grad_entries"],
    }
    return f, stats


# --- inside each compute party -------------------------------------------------


_AUTOGRAD_NAMES = ("pgk_masked_relu", "pgk_linear")


def _register_autograd():
    """Register the two autograd functions the layers below use (once per process).

    ``pgk_masked_relu``: forward ``z * [z > 0]`` with the mask from
    :func:`pgkernels.gt`; backward multiplies by the saved mask (CrypTen's
    ``x.mul(mask)`` would also form the useless gradient for the mask).
    ``pgk_linear``: ``x W^T + b``; backward forms the input's gradient only
    when the input needs one (not for the data batch), saving a Beaver matmul.
    """
    from crypten import gradients as G

    from ..protocols.compare import gt

    if all(n in G.FUNCTION_REGISTRY for n in _AUTOGRAD_NAMES):
        return

    class MaskedReLU(G.AutogradFunction):
        @staticmethod
        def forward(ctx, x):
            mask = gt(x, 0.0)
            ctx.save_for_backward(mask)
            return x.mul(mask)

        @staticmethod
        def backward(ctx, grad_output):
            (mask,) = ctx.saved_tensors
            return grad_output.mul(mask)

    class Linear(G.AutogradFunction):
        @staticmethod
        def forward(ctx, x, weight, bias):
            ctx.save_multiple_for_backward([x, weight, bool(x.requires_grad)])
            return x.matmul(weight.t()).add(bias)

        @staticmethod
        def backward(ctx, grad_output):
            x, weight, need_x = ctx.saved_tensors
            grad_x = grad_output.matmul(weight) if need_x else None
            return grad_x, grad_output.t().matmul(x), grad_output.sum(0)

    G.register_function("pgk_masked_relu")(MaskedReLU)
    G.register_function("pgk_linear")(Linear)


def _layer_classes():
    import crypten.nn as cnn

    class KernelReLU(cnn.Module):
        """ReLU on shares with pgkernels' comparison (autograd: ``pgk_masked_relu``)."""

        def forward(self, x):
            return x.pgk_masked_relu()

    class KernelLinear(cnn.Module):
        """``x W^T + b`` (autograd: ``pgk_linear``); weights loaded from a torch Linear."""

        def __init__(self, weight, bias):
            super().__init__()
            self.register_parameter("weight", weight.detach().clone().to(torch.float32))
            self.register_parameter("bias", bias.detach().clone().to(torch.float32))

        def forward(self, x):
            return x.pgk_linear(self.weight, self.bias)

    return KernelReLU, KernelLinear


def _to_crypten(state):
    """A crypten.nn.Sequential with the torch mlp's layout and weights (plaintext, not yet encrypted)."""
    import crypten.nn as cnn

    _register_autograd()
    KernelReLU, KernelLinear = _layer_classes()
    # the torch mlp is Sequential(Flatten, Linear, ReLU, ..., Linear): Linear i sits at index 1 + 2 i
    n_lin = sum(1 for k in state if k.endswith(".weight"))
    modules = []
    for i in range(n_lin):
        modules.append(KernelLinear(state[f"{1 + 2 * i}.weight"], state[f"{1 + 2 * i}.bias"]))
        if i < n_lin - 1:
            modules.append(KernelReLU())
    return cnn.Sequential(*modules), n_lin


def _reciprocal_iterations(k):
    """Newton steps for 1/s on [1, k] from the minimax linear start, to reach 2^-20."""
    err = 1.0 - 8.0 * k / (k * k + 6.0 * k + 1.0)
    steps = 0
    while err > 2.0 ** -20:
        err, steps = err * err, steps + 1
    return steps


def _softmax_rows(z):
    """Softmax along dim 1 of a shared (B, k) tensor.

    Row maximum with :func:`pgkernels.max` (so every exponent is <= 0),
    CrypTen's ``exp`` (limit approximation, 8 squarings), and the reciprocal
    of the row sum ``s`` in [1, k] by Newton's iteration ``x <- x (2 - s x)``
    from the minimax linear start ``x0 = b (k + 1 - s)``, ``b = 8 / (k^2 + 6k +
    1)`` (relative error ``1 - b k`` at most; each step squares it), with just
    enough steps for 2^-20 (3 for k = 2, 5 for k = 10): 2 rounds per step,
    against CrypTen's generic reciprocal (an exp and 10 steps).
    """
    from ..protocols import order

    k = z.size(1)
    m = order.max(z, dim=1, keepdim=True)
    e = (z - m).exp()
    s = e.sum(1, keepdim=True)
    b = 8.0 / (k * k + 6.0 * k + 1.0)
    inv = (s * -b) + b * (k + 1)
    for _ in range(_reciprocal_iterations(k)):
        inv = inv * (2 - s * inv)
    return e * inv


class _ZeroedCount:
    """Shared count of gradient entries zeroed by the threshold (local sums;
    opened once, by :meth:`open`, after training)."""

    def __init__(self):
        self.count = None
        self.checked = 0

    def add(self, keep, n_all):
        dropped = keep.sum().neg() + n_all  # shares with scale 1: an integer count
        self.count = dropped if self.count is None else self.count + dropped
        self.checked += n_all

    def open(self):
        return 0 if self.count is None else int(round(float(self.count.get_plain_text())))


def _clip_and_step(module, opt, zeroed=None):
    """Zero gradient entries outside (-GRAD_THRESHOLD, GRAD_THRESHOLD), then step.

    One batched comparison of ``[g, -g] < threshold`` (not of ``g^2``, which a
    corrupted entry near 2^32 would overflow), one product of the two bits, one
    product into the gradients: 8 rounds per step for all parameters together.
    ``zeroed``: a :class:`_ZeroedCount` that adds how many entries were zeroed
    (local, no round).
    """
    import crypten

    from ..protocols.compare import lt

    params = [p for p in module.parameters() if p.grad is not None]
    if params:
        with crypten.no_grad():
            flat = crypten.cat([p.grad.reshape(-1) for p in params])
            n_all = flat.nelement()
            below = lt(crypten.cat([flat, -flat]), GRAD_THRESHOLD)
            keep = below[:n_all].mul(below[n_all:])
            if zeroed is not None:
                zeroed.add(keep, n_all)
            flat = flat.mul(keep)
            i = 0
            for p in params:
                n = p.grad.nelement()
                p.grad = flat[i:i + n].reshape(p.grad.size())
                i += n
    opt.step()


def _decode_state(module, n_lin):
    from ..protocols.shares import decode

    out = {}
    for i in range(n_lin):
        lin = module._modules[str(2 * i)]
        out[f"{1 + 2 * i}.weight"] = decode(lin.weight).to(torch.float32)
        out[f"{1 + 2 * i}.bias"] = decode(lin.bias).to(torch.float32)
    return out


def _train_f(X, Y, Pt, job, rank, mask=None, desc=None, zeroed=None):
    """Steps 1-4 of the module docstring on the shared records: returns the
    trained shared ``crypten.nn.Sequential`` f and its number of linear layers.

    ``mask``: bit shares (N,) (int64, scale 1) or None; each record's
    gradient of the loss is multiplied by its bit (a removed record
    contributes 0; the minibatch mean still divides by B, so the step size per
    kept record is unchanged): one bit injection into the (B, K) logits'
    gradient per minibatch (1 round, 8 bytes per entry), exact. ``zeroed``:
    ``{"f": _ZeroedCount, "g": _ZeroedCount or None}``, counts of the gradient
    entries the threshold zeroes (local, no round)."""
    import crypten

    zeroed = zeroed or {}
    P = job["P"]
    advtrain = job["defense"] == "advtrain"
    f, nf = _to_crypten(job["f_state"])
    f.encrypt(src=0)
    f.train()
    opt_f = crypten.optim.SGD(f.parameters(), lr=job["lr"], momentum=job["momentum"])
    if advtrain:
        g, _ = _to_crypten(job["g_state"])
        g.encrypt(src=0)
        g.train()
        opt_g = crypten.optim.SGD(g.parameters(), lr=job["g_lr"], momentum=job["momentum"])
        sign = -1.0 if job["variant"] == "onehot" else 1.0
        uniform = torch.full((1, P), 1.0 / P)

    bar = None
    if job["progress"] and rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(len(b) for b in job["schedule"]),
                   desc=desc or f"MPC train f ({job['defense']})", unit="batch", leave=False)
    for batches in job["schedule"]:
        for idx in batches:
            it = torch.from_numpy(np.asarray(idx, dtype=np.int64))
            B = len(idx)
            xb, yb = X[it], Y[it]
            logits = f(xb)
            with crypten.no_grad():
                prob = _softmax_rows(logits.detach())
                grad_logits = (prob - yb).div(B)
                if mask is not None:
                    from ..protocols.blocks import flat_share, like_shape, mux_shares

                    k = grad_logits.size(1)
                    bits = mask[it].view(B, 1).expand(B, k).reshape(-1)
                    grad_logits = like_shape(mux_shares(bits, flat_share(grad_logits).view(1, -1)).view(B, k),
                                             grad_logits.encoder.scale)
            if advtrain:
                pb = Pt[it]
                gin = crypten.cat([prob, yb], dim=1) if job["adversary_label"] else prob
                for _ in range(job["g_steps"]):
                    g_logits = g(gin)
                    with crypten.no_grad():
                        q = _softmax_rows(g_logits.detach())
                        seed_grad = (q - pb).div(B)
                    g.zero_grad()
                    g_logits.backward(seed_grad)
                    _clip_and_step(g, opt_g, zeroed.get("g"))
                leaf = prob.clone()
                leaf.requires_grad = True
                gin = crypten.cat([leaf, yb], dim=1) if job["adversary_label"] else leaf
                g_logits = g(gin)
                with crypten.no_grad():
                    q = _softmax_rows(g_logits.detach())
                    target = pb if job["variant"] == "onehot" else uniform
                    seed_grad = (q - target).mul(sign * job["c"] / B)
                g_logits.backward(seed_grad)
                with crypten.no_grad():
                    pv = prob.mul(leaf.grad)  # dA/dp: the cat's backward already split off y's part
                    grad_logits = grad_logits + pv - prob.mul(pv.sum(1, keepdim=True))
            f.zero_grad()
            logits.backward(grad_logits)
            _clip_and_step(f, opt_f, zeroed.get("f"))
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return f, nf


def _party_train(job, party_input):
    import crypten.communicator as ccomm

    from ..runtime import comm

    rank = ccomm.get().get_rank()
    start = comm.STATS.snapshot()
    t0 = time.perf_counter()

    # this party's shares of the owners' inputs (see runtime.inputs)
    from ..runtime.inputs import to_mpc

    X = to_mpc(party_input["X"])
    Y = to_mpc(party_input["Y"])
    Pt = to_mpc(party_input["P"]) if job["defense"] == "advtrain" else None
    zeroed_f, zeroed_g = _ZeroedCount(), (_ZeroedCount() if Pt is not None else None)
    f, nf = _train_f(X, Y, Pt, job, rank, zeroed={"f": zeroed_f, "g": zeroed_g})
    state = _decode_state(f, nf)  # the output: revealed to every party
    seconds = time.perf_counter() - t0
    used = comm.STATS.snapshot().since(start)
    # after the meter: the count's opening is not part of training
    zeroed = {"f": zeroed_f.open(), "g": zeroed_g.open() if zeroed_g is not None else None}
    checked = {"f": zeroed_f.checked, "g": zeroed_g.checked if zeroed_g is not None else None}
    return {"f_state": state if rank == 0 else None, "seconds": seconds, "bytes_sent": used.bytes_sent,
            "dealer_bytes": used.dealer_bytes, "rounds": used.rounds, "grad_entries_zeroed": zeroed,
            "grad_entries": checked}


# --- poisoned-record detection and retraining ----------------------------------------

DETECTORS = ("spectral", "activation_clustering")
REVEALS = ("none", "own", "all")


def penultimate(f, X, batch=512):
    """Inside the parties: the shared penultimate-layer activations (N, h) of
    the shared records X (N, d) under the shared model ``f`` (the
    ``crypten.nn.Sequential`` of :func:`_train_f`): every layer but the last
    linear one, i.e. the output of the last hidden ReLU, ``batch`` records at
    a time. Per hidden layer: one Beaver product and one ReLU (6 + 1 rounds).
    Reveals nothing."""
    import crypten

    mods = [f._modules[k] for k in sorted(f._modules, key=int)][:-1]
    outs = []
    with crypten.no_grad():
        for i in range(0, X.size(0), batch):
            h = X[i:i + batch]
            for m in mods:
                h = m(h)
            outs.append(h)
    return crypten.cat(outs, dim=0) if len(outs) > 1 else outs[0]


def detect_and_retrain_mpc(X, y, party, num_parties, classes, detector="spectral", eps=0.1, reveal="none",
                           detector_kwargs=None, hidden=_adv.DEFAULTS["hidden"], epochs=_adv.DEFAULTS["epochs"],
                           batch_size=_adv.DEFAULTS["batch_size"], lr=_adv.DEFAULTS["lr"],
                           momentum=_adv.DEFAULTS["momentum"], seed=0, progress=True, world_size=2,
                           timeout=None, clean=None):
    """Find and remove poisoned records inside MPC, then retrain: one session.

    1. Train f on the pooled shared records as :func:`train_mpc` (defense
       "none"); f stays shared (it is not an output).
    2. Representations: :func:`penultimate` of every record, on the shares.
    3. Detection on the shared representations and the owners' shared one-hot
       labels, per class: ``detector="spectral"``
       (:func:`pgkernels.defenses.detection.spectral_signatures`, assumed
       poison rate ``eps``) or ``"activation_clustering"``
       (:func:`~pgkernels.defenses.detection.activation_clustering`);
       ``detector_kwargs`` go to the detector. Shared 0/1 flags (N,). With
       ``clean = (X_clean, y_clean)`` (trusted clean records, e.g. the
       defender's validation set; secret-shared like the training records)
       their representations under the same f are the detector's ``clean``
       set (only suspect classes lose records; see the detectors).
    4. Retrain f from the same initial weights and minibatch order with the
       shared mask ``1 - flag`` on every record's loss gradient
       (:func:`_train_f`): flagged records contribute nothing, and nobody
       learns which they were.

    ``reveal``: what is revealed about the flags. ``"none"`` (default):
    nothing -- only the retrained model is output. ``"own"``: each owner gets
    the compute parties' shares of the flags of its own records (here the
    caller plays the owners and adds them up); the compute parties learn
    nothing. ``"all"``: the flags are opened to every party (evaluation).
    Also public: the architecture, hyperparameters, record count, detector
    and its parameters, as in :func:`train_mpc`.

    Returns ``(f, info)``: the retrained, revealed ``torch.nn.Module``, and a
    dict with ``flags`` (bool (N,) for "all"; ``{owner: bool array over its
    records in their order}`` for "own"; None for "none"), ``seconds``,
    ``bytes`` (per compute party), ``rounds`` (party 0), and per phase
    (``train``, ``representations``, ``detect``, ``retrain``) the seconds,
    bytes sent by party 0 and rounds.
    """
    if detector not in DETECTORS:
        raise ValueError(f"detector must be one of {DETECTORS}, got {detector!r}")
    if reveal not in REVEALS:
        raise ValueError(f"reveal must be one of {REVEALS}, got {reveal!r}")
    X, y, party, K = _adv.check_inputs(X, y, party, num_parties, classes, "none", 1.0, "onehot", hidden,
                                       (), epochs, batch_size, lr, None, momentum, 1)
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 2:
        raise ValueError(f"world_size must be an int >= 2, got {world_size!r}")
    kwargs = dict(detector_kwargs or {})
    if detector == "spectral":
        kwargs["eps"] = eps
    f, _ = _adv.build_models(X.shape[1], K, int(num_parties), hidden, (), True, seed, "none")
    schedule = _adv.batch_order(len(X), batch_size, epochs, seed)
    nbatches = sum(len(b) for b in schedule)
    if timeout is None:
        timeout = 1200.0 + 10.0 * nbatches + 1e-4 * K * len(X) ** 2
    from ..runtime.inputs import share_all

    inputs = {"X": X, "Y": np.eye(K, dtype=np.float64)[y]}
    if clean is not None:
        Xc = np.asarray(clean[0], dtype=np.float64).reshape(len(clean[0]), -1)
        yc = np.asarray(clean[1]).astype(np.int64)
        if Xc.shape[1] != X.shape[1] or yc.shape != (len(Xc),) or (len(yc) and (yc.min() < 0 or yc.max() >= K)):
            raise ValueError(f"clean must be (X_clean (m, {X.shape[1]}), y_clean (m,) in [0, {K}))")
        inputs.update(Xc=Xc, Yc=np.eye(K, dtype=np.float64)[yc])
    party_inputs = share_all(inputs, world_size)
    job = dict(P=int(num_parties), defense="none", c=1.0, variant="onehot",
               f_state={k: v.detach().clone() for k, v in f.state_dict().items()}, g_state=None,
               schedule=schedule, lr=float(lr), g_lr=float(lr), momentum=float(momentum), g_steps=1,
               adversary_label=True, progress=bool(progress), detector=detector, detector_kwargs=kwargs,
               reveal=reveal)
    from ..runtime.launch import launch

    results = launch(_party_detect_retrain, world_size=world_size, timeout=timeout, kwargs={"job": job},
                     party_inputs=party_inputs)
    f.load_state_dict({k: v.to(torch.float32) for k, v in results[0]["f_state"].items()})
    f.eval()
    flags = None
    if reveal == "all":
        flags = results[0]["flags"].numpy().astype(bool)
    elif reveal == "own":
        # each owner adds the parties' shares of its own records' flags (mod 2^64)
        total = sum(r["flag_share"] for r in results)
        flags = {int(p): total[party == p].numpy().astype(bool) for p in np.unique(party)}
    info = {
        "detector": detector, "reveal": reveal, "flags": flags, "world_size": world_size, "batches": nbatches,
        "seconds": results[0]["seconds"], "bytes": [r["bytes_sent"] for r in results],
        "dealer_bytes": [r["dealer_bytes"] for r in results], "rounds": results[0]["rounds"],
        "phases": results[0]["phases"],
    }
    return f, info


def _party_detect_retrain(job, party_input):
    import crypten.communicator as ccomm

    from ..defenses import detection
    from ..protocols.blocks import decode, public_share
    from ..runtime import comm
    from ..runtime.inputs import to_mpc

    rank = ccomm.get().get_rank()
    start = comm.STATS.snapshot()
    t0 = time.perf_counter()
    phases = {}
    mark = [comm.STATS.snapshot(), time.perf_counter()]

    def phase(name):
        used = comm.STATS.snapshot().since(mark[0])
        phases[name] = {"seconds": time.perf_counter() - mark[1], "bytes": used.bytes_sent, "rounds": used.rounds}
        mark[:] = [comm.STATS.snapshot(), time.perf_counter()]

    X = to_mpc(party_input["X"])
    Y = to_mpc(party_input["Y"])
    f, _ = _train_f(X, Y, None, job, rank, desc="MPC train f (to inspect)")
    phase("train")
    R = penultimate(f, X)
    kw = dict(job["detector_kwargs"])
    if "Xc" in party_input:
        kw["clean"] = (penultimate(f, to_mpc(party_input["Xc"])), to_mpc(party_input["Yc"]))
    phase("representations")
    if job["detector"] == "spectral":
        flags = detection.spectral_signatures(R, Y, **kw)
    else:
        flags = detection.activation_clustering(R, Y, **kw)
    phase("detect")
    n = X.size(0)
    fs = flags.share.reshape(n)
    keep = public_share(torch.ones(n, dtype=torch.long)) - fs
    f2, nf = _train_f(X, Y, None, job, rank, mask=keep, desc="MPC retrain f (flags removed)")
    phase("retrain")
    state = _decode_state(f2, nf)
    out = {"f_state": state if rank == 0 else None, "phases": phases}
    if job["reveal"] == "all":
        out["flags"] = decode(flags).round().long()
    elif job["reveal"] == "own":
        out["flag_share"] = fs.clone()  # sent to the owners only, never opened among the parties
    used = comm.STATS.snapshot().since(start)
    out.update(seconds=time.perf_counter() - t0, bytes_sent=used.bytes_sent, dealer_bytes=used.dealer_bytes,
               rounds=used.rounds)
    return out


def strip_mpc(f, queries, clean, calibration, fpr=0.05, alpha=None, world_size=2, batch=2048, progress=True,
              timeout=1800.0):
    """STRIP (Gao et al., ACSAC 2019) inside MPC on the model ``f`` (a torch mlp
    as :func:`train_mpc` outputs; its weights are shared too).

    The queries (m, d), the defender's clean blending samples (N, d) and its
    clean calibration queries (m_c, d) are secret-shared. Every query and
    calibration query is blended with every clean sample (``alpha q + (1 -
    alpha) x``, :data:`pgkernels.defenses.reference.STRIP_ALPHA` by default; a
    public linear combination, local), f runs on the (m + m_c) N blends
    (``batch`` rows at a time), :func:`pgkernels.defenses.detection.strip_entropy`
    gives each query's mean entropy, :func:`~pgkernels.defenses.detection.strip_threshold`
    calibrates the threshold at false-positive rate ``fpr`` on the
    calibration queries, and :func:`~pgkernels.defenses.detection.strip_flags`
    flags the queries below it.

    Revealed: the flags of the queries (the detector's output, to every
    party); not the entropies, the threshold or the blends. Returns a dict
    with ``flags`` (bool (m,)), ``seconds``, ``bytes``, ``rounds``.
    """
    from ..defenses import reference

    alpha = reference.STRIP_ALPHA if alpha is None else float(alpha)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    arrays = {}
    for name, a in (("queries", queries), ("clean", clean), ("calibration", calibration)):
        a = np.asarray(a, dtype=np.float64)
        if a.ndim < 2 or not len(a):
            raise ValueError(f"{name} must have shape (n, d) with n >= 1, got {a.shape}")
        arrays[name] = a.reshape(len(a), -1)
    reference.strip_rank(fpr, len(arrays["calibration"]))  # checks fpr
    state = {k: v.detach().clone().to(torch.float32) for k, v in f.state_dict().items()}
    from ..runtime.inputs import share_all
    from ..runtime.launch import launch

    job = dict(state=state, fpr=float(fpr), alpha=alpha, batch=int(batch), progress=bool(progress))
    results = launch(_party_strip, world_size=world_size, timeout=timeout, kwargs={"job": job},
                     party_inputs=share_all(arrays, world_size))
    r = results[0]
    return {"flags": r["flags"].numpy().astype(bool), "seconds": r["seconds"],
            "bytes": [x["bytes_sent"] for x in results], "rounds": r["rounds"]}


def _party_strip(job, party_input):
    import crypten
    import crypten.communicator as ccomm

    from ..defenses import detection
    from ..protocols.shares import decode
    from ..runtime import comm
    from ..runtime.inputs import to_mpc

    rank = ccomm.get().get_rank()
    start = comm.STATS.snapshot()
    t0 = time.perf_counter()
    Q = to_mpc(party_input["queries"])
    C = to_mpc(party_input["clean"])
    Cal = to_mpc(party_input["calibration"])
    f, _ = _to_crypten(job["state"])
    f.encrypt(src=0)
    f.eval()
    a = job["alpha"]
    N, d = C.size()
    base = C * (1 - a)

    def entropies(Z, label):
        m = Z.size(0)
        per = max(1, job["batch"] // N)
        out = []
        rng = range(0, m, per)
        if job["progress"] and rank == 0:
            from tqdm.auto import tqdm

            rng = tqdm(rng, desc=f"MPC STRIP ({label})", unit="chunk", leave=False)
        with crypten.no_grad():
            for i in rng:
                z = Z[i:i + per]
                k = z.size(0)
                blends = (z * a).view(k, 1, d) + base.view(1, N, d)
                out.append(detection.strip_entropy(f(blends.view(k * N, d)), N))
        return crypten.cat(out) if len(out) > 1 else out[0]

    Hq = entropies(Q, "queries")
    Hc = entropies(Cal, "calibration")
    thr = detection.strip_threshold(Hc, job["fpr"])
    flags = decode(detection.strip_flags(Hq, thr)).round().long()  # the output
    used = comm.STATS.snapshot().since(start)
    return {"flags": flags, "seconds": time.perf_counter() - t0, "bytes_sent": used.bytes_sent,
            "rounds": used.rounds}
