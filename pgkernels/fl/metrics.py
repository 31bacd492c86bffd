"""Evaluation metrics of the federated-learning lab: main-task accuracy, attack
success rate, AUROR's accuracy drop and the detection rates of the rules that
select clients."""

import numpy as np
import torch

from . import attacks as _attacks


@torch.no_grad()
def predict(model, X, batch_size=4096):
    """Predicted classes (int64 numpy) of ``model`` on the rows of ``X``."""
    was_training = model.training
    model.eval()
    X = np.asarray(X, dtype=np.float32)
    X = X.reshape(len(X), -1)
    out = []
    for i in range(0, len(X), batch_size):
        out.append(model(torch.from_numpy(X[i:i + batch_size])).argmax(dim=1).numpy())
    model.train(was_training)
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def accuracy(model, X, y):
    """Fraction of the rows of ``X`` whose predicted class equals ``y``."""
    y = np.asarray(y)
    if len(y) == 0:
        raise ValueError("accuracy of an empty set")
    return float((predict(model, X) == y).mean())


def attack_success_rate(model, X_test, y_test, dataset, attack, target=None, source=None, trigger=None):
    """Success rate of a targeted attack on the test set (None for untargeted attacks).

    * ``"backdoor"``: the fraction of non-``target`` test samples that, with the
      trigger stamped (:func:`pgkernels.fl.attacks.apply_trigger`; ``trigger``
      default: the dataset's), are classified as ``target``;
    * ``"targeted"`` (AUROR's source-to-target mislabelling): the fraction of
      ``source``-class test samples classified as ``target``;
    * ``"label_flip"``: the fraction of test samples (whose flipped label
      differs from the true one) classified as their flipped label C-1-y.

    ``dataset``: the :class:`pgkernels.data.Dataset` (for the trigger and the
    number of classes).
    """
    y_test = np.asarray(y_test)
    if attack == "backdoor":
        if target is None:
            raise ValueError("the backdoor success rate needs target")
        keep = y_test != target
        Xt = _attacks.apply_trigger(np.asarray(X_test)[keep], dataset, trigger)
        return float((predict(model, Xt) == target).mean()) if keep.any() else float("nan")
    if attack == "targeted":
        if target is None or source is None:
            raise ValueError("the targeted success rate needs source and target")
        keep = y_test == source
        return float((predict(model, np.asarray(X_test)[keep]) == target).mean()) if keep.any() else float("nan")
    if attack == "label_flip":
        flipped = _attacks.label_flip(y_test, dataset.num_classes)
        keep = flipped != y_test
        return float((predict(model, np.asarray(X_test)[keep]) == flipped[keep]).mean())
    return None


def accuracy_drop(acc_clean_run, acc_attacked):
    """AUROR's accuracy drop (Shen et al., ACSAC 2016): the main-task accuracy
    of the run without attack minus that of the attacked run (positive: the
    attack hurt)."""
    return float(acc_clean_run) - float(acc_attacked)


def detection_rates(selected_or_kept_indices, malicious_indices, n):
    """Detection rates of a rule that keeps the clients ``selected_or_kept_indices`` out of ``n``.

    Returns a dict: ``tpr`` -- the fraction of malicious clients excluded
    (None when there are none), ``fpr`` -- the fraction of benign clients
    excluded (None when all are malicious), and the counts
    ``excluded_malicious``, ``excluded_benign``, ``kept``.
    """
    kept = np.zeros(n, dtype=bool)
    idx = np.asarray(selected_or_kept_indices, dtype=np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise ValueError(f"kept indices must lie in [0, {n})")
    kept[idx] = True
    mal = np.zeros(n, dtype=bool)
    midx = np.asarray(malicious_indices, dtype=np.int64).reshape(-1)
    if midx.size and (midx.min() < 0 or midx.max() >= n):
        raise ValueError(f"malicious indices must lie in [0, {n})")
    mal[midx] = True
    n_mal, n_ben = int(mal.sum()), int((~mal).sum())
    ex_mal = int((mal & ~kept).sum())
    ex_ben = int((~mal & ~kept).sum())
    return {"tpr": ex_mal / n_mal if n_mal else None,
            "fpr": ex_ben / n_ben if n_ben else None,
            "excluded_malicious": ex_mal, "excluded_benign": ex_ben, "kept": int(kept.sum())}
