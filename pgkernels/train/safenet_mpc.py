"""SafeNet as an MPC job: share the owners' models and data, run the ensemble
in compute parties, return the predictions.

The rule (filter by validation accuracy, majority vote) and its plaintext
reference are :mod:`pgkernels.defenses.safenet`; the batched secure inference
is :mod:`pgkernels.protocols.nn`. This module plays the data owners and starts
the parties, as :mod:`pgkernels.train.mpc` does for training.
"""

import time

import numpy as np

from ..defenses.safenet import EmptyEnsembleError, check_inputs, min_correct, safenet_on_shares
from ..protocols import nn as secure_nn
from ..runtime import comm
from ..runtime import launch as _launch
from ..runtime.inputs import FRAC_BITS, share, to_mpc


def _load_party_inputs(data):
    groups = []
    for g in data["groups"]:
        layers = [secure_nn.Layer(kind, hyper, None if p is None else (to_mpc(p[0]), to_mpc(p[1])))
                  for kind, hyper, p in g["layers"]]
        groups.append((g["M"], layers))
    return groups, to_mpc(data["X_val"]), to_mpc(data["Y_val"]), to_mpc(data["X"])


def _party(meta, party_input):
    """Runs in every compute party: expand its own shares, run SafeNet, open the outputs."""
    groups, X_val, Y_val, X = _load_party_inputs(party_input)
    del party_input
    comm.reset_stats()
    t0 = time.perf_counter()
    out = safenet_on_shares(groups, X_val, Y_val, X, meta["min_correct"], on_empty=meta["on_empty"],
                            chunk=meta["chunk"], reveal_selection=meta["reveal_selection"])
    out["seconds"] = time.perf_counter() - t0
    out["stats"] = comm.STATS.snapshot().as_dict()
    return out


def _party_shares(checked, world_size):
    """Party r's shares of every group's stacked parameters, the validation rows,
    the one-hot labels and the queries; and the models' order (groups concatenated)."""
    by_sig = {}
    for j, layers in enumerate(checked.layers):
        by_sig.setdefault(secure_nn.signature(layers), []).append(j)
    order = [j for idx in by_sig.values() for j in idx]
    Y_val = np.eye(checked.classes, dtype=np.float64)[checked.y_val]
    shares = [dict(groups=[]) for _ in range(world_size)]
    for key, a, bits in (("X_val", checked.X_val, FRAC_BITS), ("X", checked.X, FRAC_BITS), ("Y_val", Y_val, 0)):
        for r, sh in enumerate(share(a, world_size, key, bits)):
            shares[r][key] = sh
    for sig, idx in by_sig.items():
        stacked = secure_nn.stack_params([checked.layers[j] for j in idx])
        per_rank = [[] for _ in range(world_size)]
        for (kind, hyper), p in zip(sig, stacked):
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
    return shares, order


def safenet_mpc(models, X_val, y_val, X, threshold=0.5, world_size=2, classes=None, on_empty="raise",
                reveal_selection=False, chunk=4096, timeout=3600.0, threads=1):
    """SafeNet on secret shares: secure inference of every owner's model, filtering
    by validation accuracy and a secure majority vote; reveals only the predictions.

    Same semantics and arguments as
    :func:`pgkernels.defenses.safenet.safenet_reference`, plus the session's
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

    Protocol: :func:`pgkernels.defenses.safenet.safenet_on_shares` in every
    party, on the batched inference of :mod:`pgkernels.protocols.nn` (models
    of one architecture at once: the first layer one Beaver matmul /
    convolution with all models' weights, later layers batched matmuls /
    grouped convolutions; ReLU 6 rounds and 13.25 bytes per element for 2
    parties; 2x2 max pooling 12 rounds). Rounds: per chunk of rows about ``(1
    + 6) * linear/conv layers + 12 * pools + 6 ceil(log2 C) + 1`` plus one
    opening; bytes are dominated by the first layer's masked rows (8 bytes per
    feature per row per party for 2 parties) and the ReLUs (13.25 bytes per
    hidden unit per model per row). The measured totals are returned.
    Measured (2 parties, this 2-core host shared with other jobs): 10 MNIST
    MLPs 784-512-10, 1,000 validation rows and 19,020 queries: 81 s, 2.6 GB
    sent per party, 330 rounds.

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
    checked = check_inputs(models, X_val, y_val, X, threshold, classes, on_empty)
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 2:
        raise ValueError(f"world_size must be an int >= 2, got {world_size!r}")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive int, got {chunk!r}")
    t_wall = time.perf_counter()
    n_val, m = len(checked.X_val), len(checked.models)
    shares, order = _party_shares(checked, world_size)
    meta = {"chunk": chunk, "min_correct": min_correct(checked.threshold, n_val), "on_empty": on_empty,
            "reveal_selection": bool(reveal_selection)}
    # party r's process receives only shares[r] (launch's party_inputs)
    res = _launch.launch(_party, world_size=world_size, args=(meta,), timeout=timeout, threads=threads,
                         party_inputs=shares)
    del shares
    r0 = res[0]
    if r0["none_kept"]:
        raise EmptyEnsembleError(f"no model reaches validation accuracy {checked.threshold} "
                                 f"(needs {meta['min_correct']} of {n_val} validation rows correct)")
    kept = val_acc = fallback = None
    if reveal_selection:
        keep = np.zeros(m, dtype=bool)
        correct = np.zeros(m, dtype=np.int64)
        keep[order] = r0["keep"].astype(bool)
        correct[order] = r0["correct"]
        val_acc = correct / n_val
        fallback = bool(keep.all() and (correct < meta["min_correct"]).all())
        kept = [] if fallback else [int(j) for j in np.flatnonzero(keep)]
    return {"pred": np.asarray(r0["pred"], dtype=np.int64), "kept": kept, "val_acc": val_acc, "fallback": fallback,
            "seconds": r0["seconds"], "wall_seconds": time.perf_counter() - t_wall,
            "bytes": [r["stats"]["bytes_sent"] for r in res],
            "dealer_bytes": [r["stats"]["dealer_bytes"] for r in res],
            "rounds": r0["stats"]["rounds"]}


__all__ = ["safenet_mpc"]
