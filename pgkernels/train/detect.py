"""Find the poisoned records, remove them, retrain: the plaintext pipeline and its metrics.

The same steps as the MPC session :func:`pgkernels.train.mpc.detect_and_retrain_mpc`
(train the pooled model, take every record's penultimate-layer activations,
run a detector of :mod:`pgkernels.defenses.reference` per class, retrain
from the same initial weights and minibatch order with the flagged records'
loss weighted 0) and of :func:`pgkernels.train.mpc.strip_mpc` (STRIP at
inference), in numpy / torch, for the experiments at full scale; and the
detection rates.
"""

import time

import numpy as np
import torch

from ..defenses import reference
from . import advtrain as _adv

DETECTORS = ("spectral", "activation_clustering")


def representations(f, X, batch=4096):
    """Penultimate-layer activations (N, h) of the torch mlp ``f`` (every
    module but the last linear layer) on the records X (N, ...), float64."""
    body = f[:-1]
    X = torch.as_tensor(np.asarray(X, dtype=np.float32))
    outs = []
    with torch.no_grad():
        for i in range(0, len(X), batch):
            outs.append(body(X[i:i + batch]).double().numpy())
    return np.concatenate(outs) if outs else np.zeros((0, 0))


def detect(R, y, detector, classes, eps=0.1, **kwargs):
    """Bool flags (N,) of the reference ``detector`` on representations R and
    labels y (``clean=(R_clean, y_clean)`` among the kwargs: the trusted clean
    set's representations)."""
    if detector == "spectral":
        return reference.spectral_signatures(R, y, eps, classes=classes, **kwargs)[0]
    if detector == "activation_clustering":
        return reference.activation_clustering(R, y, classes=classes, **kwargs)[0]
    raise ValueError(f"detector must be one of {DETECTORS}, got {detector!r}")


def detect_and_retrain(X, y, party, num_parties, classes, detector="spectral", eps=0.1, detector_kwargs=None,
                       clean=None, seed=0, progress=True, **hyperparams):
    """Plaintext twin of :func:`pgkernels.train.mpc.detect_and_retrain_mpc`
    (``clean = (X_clean, y_clean)``: trusted clean records, represented by the
    same first model).

    Returns ``(f, info)``: the retrained model and ``flags`` (bool (N,)),
    ``seconds`` and the first model's per-phase seconds."""
    K = classes if isinstance(classes, int) else len(classes)
    t0 = time.perf_counter()
    f0, _ = _adv.train_plaintext(X, y, party, num_parties, classes, defense="none", seed=seed,
                                 progress=progress, **hyperparams)
    t1 = time.perf_counter()
    R = representations(f0, X)
    kw = dict(detector_kwargs or {})
    if clean is not None:
        kw["clean"] = (representations(f0, clean[0]), np.asarray(clean[1]))
    flags = detect(R, np.asarray(y), detector, K, eps=eps, **kw)
    t2 = time.perf_counter()
    f, _ = _adv.train_plaintext(X, y, party, num_parties, classes, defense="none", seed=seed, progress=progress,
                                record_weights=(~flags).astype(np.float32), **hyperparams)
    t3 = time.perf_counter()
    return f, {"flags": flags, "seconds": t3 - t0,
               "phases": {"train": t1 - t0, "detect": t2 - t1, "retrain": t3 - t2}}


def strip_entropies(f, queries, clean, alpha=reference.STRIP_ALPHA, batch=8192):
    """Mean STRIP entropy (m,) of each query under the torch model f: the
    query blended with every clean sample (:func:`reference.strip_blend`)."""
    q = np.asarray(queries, dtype=np.float64).reshape(len(queries), -1)
    c = np.asarray(clean, dtype=np.float64).reshape(len(clean), -1)
    N = len(c)
    per = max(1, batch // N)
    out = []
    with torch.no_grad():
        for i in range(0, len(q), per):
            blends = reference.strip_blend(q[i:i + per], c, alpha)
            logits = f(torch.as_tensor(blends, dtype=torch.float32)).double().numpy()
            out.append(reference.strip_entropy(logits, N))
    return np.concatenate(out)


def strip(f, queries, clean, calibration, fpr=0.05, alpha=reference.STRIP_ALPHA):
    """Plaintext twin of :func:`pgkernels.train.mpc.strip_mpc`: bool flags (m,)
    and the threshold calibrated on the clean calibration queries."""
    thr = reference.strip_threshold(strip_entropies(f, calibration, clean, alpha), fpr)
    return reference.strip_flags(strip_entropies(f, queries, clean, alpha), thr), float(thr)


def rates(flags, poisoned):
    """Detection rates: ``tpr`` (share of the poisoned records flagged), ``fpr``
    (share of the clean records flagged) and the counts. ``poisoned``: bool
    (N,) or the poisoned row indices."""
    flags = np.asarray(flags, dtype=bool)
    bad = np.zeros(len(flags), dtype=bool)
    p = np.asarray(poisoned)
    if p.dtype == bool:
        bad = p
    else:
        bad[p.astype(np.int64)] = True
    nb, nc = int(bad.sum()), int((~bad).sum())
    return {"tpr": float(flags[bad].mean()) if nb else None, "fpr": float(flags[~bad].mean()) if nc else None,
            "flagged": int(flags.sum()), "poisoned": nb, "clean": nc}
