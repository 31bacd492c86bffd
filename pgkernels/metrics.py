"""Metrics of poisoning and defenses, for the federated lab and for private training.

Every function that evaluates a model takes either a ``torch.nn.Module``
(logits out; inputs are flattened) or a predict callable ``X -> class
indices (N,)`` or ``X -> scores/probabilities (N, C)`` (argmax taken).

* :func:`accuracy` (also :func:`validation_accuracy`), :func:`attack_success_rate`,
  :func:`accuracy_drop` (AUROR's);
* :func:`contamination_accuracy` -- Hayes & Ohrimenko's equation (1);
* :func:`detection_rates` -- malicious / benign clients a rule left out;
* :func:`party_membership_inference` -- how well an attack model tells from
  ``f``'s outputs which owner a record came from;
* :func:`release_decision` -- a party receives the joint model only if it
  beats its local model on its validation data.
"""

import numpy as np

from .attacks import ATTACKS as PARTY_ATTACKS
from .attacks import UPDATE_ATTACKS
from .attacks.contamination import attribute_mask, insert_words

__all__ = ["accuracy", "accuracy_drop", "attack_success_rate", "contamination_accuracy",
           "contamination_accuracy_text", "detection_rates", "model_outputs", "party_membership_inference",
           "predict", "release_decision", "validation_accuracy"]

# every attack name the metrics know: untargeted ones have no success rate
KNOWN_ATTACKS = tuple(dict.fromkeys(PARTY_ATTACKS + UPDATE_ATTACKS))


def _predict_module(model, X, batch_size):
    import torch

    was_training = model.training
    model.eval()
    X = np.asarray(X, dtype=np.float32)
    X = X.reshape(len(X), -1)
    out = []
    with torch.no_grad():
        for i in range(0, len(X), batch_size):
            out.append(model(torch.from_numpy(X[i:i + batch_size])).argmax(dim=1).numpy())
    model.train(was_training)
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def predict(model_or_predict, X, batch_size=4096):
    """Predicted class indices (int64 ``(N,)``) of a torch model (in batches,
    eval mode, inputs flattened) or a predict callable."""
    import torch

    if isinstance(model_or_predict, torch.nn.Module):
        return _predict_module(model_or_predict, X, batch_size)
    if not callable(model_or_predict):
        raise TypeError(f"expected a torch.nn.Module or a predict callable, got {type(model_or_predict).__name__}")
    out = model_or_predict(X)
    if isinstance(out, torch.Tensor):
        out = out.detach().cpu().numpy()
    out = np.asarray(out)
    if out.ndim == 2:
        out = out.argmax(axis=1)
    if out.shape != (len(X),):
        raise ValueError(f"the predict callable returned shape {out.shape} for {len(X)} records")
    if out.dtype.kind == "f":
        if (out != np.round(out)).any():
            raise ValueError("the predict callable returned non-integer class indices")
    return out.astype(np.int64)


def model_outputs(model_or_predict, X, batch_size=4096):
    """``f``'s output vectors on ``X``: softmax probabilities of a torch model,
    or whatever (N, C) scores a callable returns (1-D class indices become one-hot)."""
    import torch

    if isinstance(model_or_predict, torch.nn.Module):
        was = model_or_predict.training
        model_or_predict.eval()
        Xf = np.asarray(X, dtype=np.float32).reshape(len(X), -1)
        with torch.no_grad():
            out = [torch.softmax(model_or_predict(torch.from_numpy(Xf[i:i + batch_size])), dim=1).numpy()
                   for i in range(0, len(Xf), batch_size)]
        model_or_predict.train(was)
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)
    out = model_or_predict(X)
    out = np.asarray(out.detach().cpu().numpy() if hasattr(out, "detach") else out)
    if out.ndim == 1:
        out = np.eye(int(out.max()) + 1)[out.astype(np.int64)]
    return out


def _nonempty(mask, what):
    if not mask.any():
        raise ValueError(f"no records {what}: the metric is undefined")


def contamination_accuracy(model_or_predict, X, y, attrs, attributes, label, feature_names=None):
    """Hayes & Ohrimenko's contamination accuracy, their equation (1):

        sum over (x, y) in D with x carrying a_1..a_k' and y != l_r of 1[f(x) = l_r]
        -----------------------------------------------------------------------------
             |{(x, y) in D : x carries a_1..a_k' and y != l_r}|

    on a clean evaluation set ``D`` (validation or test records): the share
    of records that have the contaminated attribute values but a true label
    other than l_r which the model nevertheless classifies as l_r -- how far
    it learnt the attacker's rule "a_1..a_k' => l_r".

    ``attrs``: the raw attributes of ``X`` (dict; may be None when
    ``feature_names`` lets the one-hot columns of ``X`` be read instead);
    ``attributes``: ``{attribute: value}`` (a_1..a_k'); ``label``: l_r (index).
    Raises ValueError when no record of ``X`` matches.
    """
    y = np.asarray(y)
    mask = attribute_mask(X, attrs, feature_names, attributes) & (y != int(label))
    _nonempty(mask, f"carry {attributes} with a label other than {label}")
    pred = predict(model_or_predict, np.asarray(X)[mask])
    return float((pred == int(label)).mean())


def contamination_accuracy_text(model_or_predict, texts, y, vectorizer, words, label, repeat=1):
    """Equation (1) for text: the share of evaluation documents whose true
    label is not l_r that the model classifies as l_r once the contamination
    ``words`` are inserted (natural documents rarely hold all of them, so
    they are inserted as the attacker did)."""
    y = np.asarray(y)
    keep = y != int(label)
    _nonempty(keep, f"with a label other than {label}")
    docs = insert_words(np.asarray(texts, dtype=object)[keep], words, repeat)
    X = vectorizer.transform(list(docs)).toarray().astype(np.float32)
    return float((predict(model_or_predict, X) == int(label)).mean())


def accuracy(model_or_predict, X, y):
    """Share of the records of ``X`` whose predicted class equals ``y``."""
    y = np.asarray(y)
    _nonempty(np.ones(len(y), bool), "to evaluate")
    return float((predict(model_or_predict, X) == y).mean())


validation_accuracy = accuracy  # the name private training reports it under


def attack_success_rate(model_or_predict, X, y, attack, target=None, source=None, trigger=None, num_classes=None):
    """Success of a targeted attack on a clean test set ``(X, y)`` (None for
    untargeted attacks -- contamination, update attacks -- or no attack):

    * ``"backdoor"``: share of non-``target`` records classified ``target``
      once ``trigger`` (a :class:`pgkernels.attacks.Trigger`) is stamped;
    * ``"targeted"``: share of ``source``-class records classified ``target``;
    * ``"label_flip"``: share of records (whose flipped label differs) classified
      as their flipped label ``C-1-y`` (needs ``num_classes``).

    ValueError for an unknown attack, a missing argument, or no record to measure on.
    """
    y = np.asarray(y)
    X = np.asarray(X)
    if attack == "backdoor":
        if target is None or trigger is None:
            raise ValueError("the backdoor success rate needs target and trigger")
        keep = y != target
        _nonempty(keep, f"outside the target class {target}")
        return float((predict(model_or_predict, trigger.stamp(X[keep])) == target).mean())
    if attack == "targeted":
        if target is None or source is None:
            raise ValueError("the targeted success rate needs source and target")
        keep = y == source
        _nonempty(keep, f"of the source class {source}")
        return float((predict(model_or_predict, X[keep]) == target).mean())
    if attack == "label_flip":
        if num_classes is None:
            raise ValueError("the label-flip success rate needs num_classes")
        flipped = num_classes - 1 - y
        keep = flipped != y
        _nonempty(keep, "whose flipped label differs")
        return float((predict(model_or_predict, X[keep]) == flipped[keep]).mean())
    if attack in KNOWN_ATTACKS:
        return None  # untargeted (contamination, update attacks) or no attack
    raise ValueError(f"unknown attack {attack!r}: one of {sorted(KNOWN_ATTACKS)}")


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


def party_membership_inference(outputs, party, seed=0, labels=None, num_classes=None, test_fraction=0.3,
                               return_details=False):
    """Party-level membership inference (Hayes & Ohrimenko, Sec. 5): train an
    attack model on ``f``'s output vectors to predict which owner a record
    came from, and report its accuracy on held-out records.

    ``outputs``: ``(N, C)`` output vectors of ``f`` on the owners' training
    records (e.g. :func:`model_outputs`), ``party``: their owner ids. With
    ``labels`` the attack also sees the one-hot true label. The attack model
    is multinomial logistic regression (scikit-learn) fitted on a seeded
    stratified ``1 - test_fraction`` of the records. Chance is the largest
    party's share (1/P for equal parties).

    Returns the held-out accuracy, or with ``return_details`` a dict with
    ``accuracy``, ``chance``, ``train_accuracy`` and the counts.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    F = np.asarray(outputs, dtype=np.float64)
    party = np.asarray(party).astype(np.int64)
    if F.ndim != 2 or len(F) != len(party):
        raise ValueError(f"outputs must have shape (N, C) with N = len(party) = {len(party)}, got {F.shape}")
    if not np.isfinite(F).all():
        raise ValueError("outputs contain NaN or infinite values")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    if len(np.unique(party)) < 2:
        raise ValueError("party membership inference needs records of at least 2 parties")
    if labels is not None:
        labels = np.asarray(labels).astype(np.int64)
        C = int(num_classes) if num_classes is not None else int(labels.max()) + 1
        F = np.concatenate([F, np.eye(C)[labels]], axis=1)
    Ftr, Fte, ptr, pte = train_test_split(F, party, test_size=test_fraction, random_state=seed, stratify=party)
    clf = LogisticRegression(max_iter=2000)
    clf.fit(Ftr, ptr)
    acc = float((clf.predict(Fte) == pte).mean())
    if not return_details:
        return acc
    return {"accuracy": acc, "chance": float(np.bincount(pte).max() / len(pte)),
            "train_accuracy": float((clf.predict(Ftr) == ptr).mean()), "n_train": int(len(ptr)),
            "n_test": int(len(pte))}


def release_decision(joint_acc_per_party, local_acc_per_party):
    """The model-release rule: party ``p`` receives the joint model only if its
    accuracy on ``p``'s validation data beats (strictly) ``p``'s local
    model's. Returns one entry per party: True/False, or None where either
    accuracy is None (the party has no validation records to decide on)."""
    j, loc = list(joint_acc_per_party), list(local_acc_per_party)
    if len(j) != len(loc):
        raise ValueError(f"joint and local accuracies differ in length: {len(j)} vs {len(loc)}")
    out = []
    for a, b in zip(j, loc):
        if a is None or b is None:
            out.append(None)
            continue
        a, b = float(a), float(b)
        if not (np.isfinite(a) and np.isfinite(b)):
            raise ValueError("accuracies contain NaN or infinite values (use None for a party "
                             "with no validation records)")
        out.append(a > b)
    return out
