"""Poisoning a data owner's or client's records ``(X, y)`` before it trains honestly on them.

* :func:`label_flip` -- every label y becomes C - 1 - y;
* :func:`targeted_mislabel` -- source-to-target mislabelling of one client's own records;
* :func:`concentrated_targeted` -- AUROR's threat model: a fraction of *all*
  training records are source-class images labelled as the target, all held
  by the malicious users;
* :func:`backdoor` -- a trigger (:class:`Trigger`: a pixel patch for images,
  :func:`image_trigger`; fixed feature values for tabular or text data,
  :func:`tabular_trigger`; :func:`make_trigger` picks per dataset) stamped on
  a fraction of the records, relabelled to the target; :func:`apply_trigger`
  stamps it on test inputs to measure the backdoor's success.

The federated lab (:mod:`pgkernels.fl`) applies them to malicious clients,
:func:`pgkernels.attacks.poison_parties` to any subset of the data owners of
private training.
"""

import dataclasses

import numpy as np

IMAGE_SIDES = {"mnist": 28, "fashion_mnist": 28, "digits": 8}
RECORD_ATTACKS = ("label_flip", "backdoor", "targeted")



def label_flip(y, num_classes):
    """Label flipping (e.g. Tolpegin et al., ESORICS 2020; Fang et al. 2020):
    every label ``y`` becomes ``num_classes - 1 - y``.

    Defining property: an involution mapping class c to class C-1-c for all
    samples (with an even number of classes no label stays correct).
    """
    y = np.asarray(y)
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got range [{y.min()}, {y.max()}]")
    return (num_classes - 1 - y).astype(y.dtype, copy=False)


def targeted_mislabel(y, source, target):
    """AUROR's targeted poisoning (Shen, Tople & Saxena, ACSAC 2016): all samples
    of class ``source`` are relabeled ``target``; the rest stay untouched.

    Defining property: ``y'[y == source] == target`` and ``y' == y`` elsewhere.
    """
    if source == target:
        raise ValueError(f"source and target classes must differ, both are {source}")
    y = np.array(y, copy=True)
    y[y == source] = target
    return y


def concentrated_targeted(y, num_malicious, fraction, source, target, seed=0):
    """AUROR's targeted poisoning threat model (Shen, Tople & Saxena, ACSAC
    2016, Sec. 5): a ``fraction`` of ALL the training records are poisoned --
    source-class images labelled as the target -- and they are concentrated
    in the ``num_malicious`` malicious users (split as evenly as possible),
    who hold nothing else. The benign users keep the ``N = len(y)`` clean
    records, so there are ``B = round(fraction * N / (1 - fraction))``
    poisoned ones (``B / (N + B)`` is ``fraction`` up to rounding). The
    attacker's images are drawn from the ``S`` source-class training images
    (the attacker's own images of that class, from the same distribution):
    distinct while ``B <= S``, then every one of them plus ``B - S`` drawn
    again.

    Args:
        y: the clean training labels (1-D ints) the images are drawn from.
        num_malicious: malicious users holding the poisoned records (>= 1).
        fraction: poisoned share of all the records, in [0, 1).
        source, target: distinct classes.
        seed: seeds the choice of images.

    Returns:
        a list of ``num_malicious`` int64 arrays of indices into ``y`` (all of
        class ``source``; the caller labels them ``target``), ``B`` in all.
    """
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"y must be a 1-D label vector, got shape {y.shape}")
    if isinstance(num_malicious, bool) or not isinstance(num_malicious, (int, np.integer)) or num_malicious < 1:
        raise ValueError(f"num_malicious must be an int >= 1, got {num_malicious!r}")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.floating, np.integer)) \
            or not 0.0 <= float(fraction) < 1.0:
        raise ValueError(f"fraction must be a number in [0, 1), got {fraction!r}")
    if source == target:
        raise ValueError(f"source and target classes must differ, both are {source}")
    fraction = float(fraction)
    budget = int(round(fraction * len(y) / (1.0 - fraction)))
    src = np.flatnonzero(y == source)
    if budget and not len(src):
        raise ValueError(f"no record of the source class {source} to poison")
    rng = np.random.default_rng(seed)
    if budget <= len(src):
        chosen = rng.choice(src, size=budget, replace=False)
    else:
        chosen = np.concatenate([rng.permutation(src), rng.choice(src, size=budget - len(src), replace=True)])
    return [np.sort(part).astype(np.int64) for part in np.array_split(chosen, int(num_malicious))]


@dataclasses.dataclass(frozen=True)
class Trigger:
    """A backdoor trigger: the flat feature ``indices`` set to ``values``
    (a pixel patch for images, a few features for tabular data)."""

    indices: tuple
    values: tuple
    description: str = ""

    def stamp(self, X):
        """A copy of the rows ``X`` (any shape ``(N, ...)``) with the trigger set."""
        X = np.array(X, copy=True)
        flat = X.reshape(X.shape[0], -1)
        flat[:, list(self.indices)] = np.asarray(self.values, dtype=X.dtype)
        return flat.reshape(X.shape)

    def present(self, X):
        """Boolean per row: does ``X`` carry the trigger?"""
        flat = np.asarray(X).reshape(len(X), -1)
        return np.all(flat[:, list(self.indices)] == np.asarray(self.values, dtype=flat.dtype), axis=1)


def image_trigger(side, size=None, value=1.0, corner="bottom_right", margin=1):
    """A ``size x size`` square of brightness ``value`` near a corner of a
    ``side x side`` image (flat row-major indices), ``margin`` pixels from the
    border, as in BadNets (Gu et al. 2017) and Bagdasaryan et al. (2020)'s
    pixel-pattern backdoor. Default size: 3 for 28x28, 2 for 8x8."""
    if size is None:
        size = 3 if side >= 16 else 2
    if size + margin > side:
        raise ValueError(f"a {size}x{size} trigger does not fit a {side}x{side} image")
    hi = side - margin
    rows = range(hi - size, hi) if "bottom" in corner else range(margin, margin + size)
    cols = range(hi - size, hi) if "right" in corner else range(margin, margin + size)
    idx = tuple(r * side + c for r in rows for c in cols)
    return Trigger(idx, (float(value),) * len(idx), f"{size}x{size} patch of {value:g}, {corner}")


def tabular_trigger(X_train, k=4):
    """For tabular/text features: ``k`` fixed, evenly spaced features set to
    their maximum over the training set (a rare, easily learned pattern)."""
    X_train = np.asarray(X_train).reshape(len(X_train), -1)
    d = X_train.shape[1]
    k = min(int(k), d)
    idx = tuple(int(i) for i in np.unique(np.linspace(0, d - 1, k).round().astype(int)))
    vals = tuple(float(v) for v in X_train[:, list(idx)].max(axis=0))
    return Trigger(idx, vals, f"features {list(idx)} set to their training maxima")


def make_trigger(dataset):
    """The default trigger for ``dataset`` (a :class:`pgkernels.data.Dataset`,
    or the name of an image dataset): a bright 3x3 patch for 28x28 images, 2x2
    for the 8x8 digits, else :func:`tabular_trigger` on the training features."""
    name = dataset if isinstance(dataset, str) else dataset.name
    if name in IMAGE_SIDES:
        return image_trigger(IMAGE_SIDES[name])
    if isinstance(dataset, str):
        raise ValueError(f"a trigger for the non-image dataset {name!r} needs the Dataset (its training features)")
    return tabular_trigger(dataset.X_train)


def apply_trigger(X, dataset, trigger=None):
    """A copy of ``X`` with the backdoor trigger stamped on every row
    (``trigger`` default: :func:`make_trigger` of ``dataset``). Used on the
    test set to measure the backdoor's success."""
    trigger = make_trigger(dataset) if trigger is None else trigger
    return trigger.stamp(X)


def backdoor(X, y, target, trigger, fraction=0.5, seed=0, return_indices=False):
    """Backdoor data poisoning (BadNets, Gu et al. 2017; the pixel-pattern
    backdoor of Bagdasaryan et al., AISTATS 2020): a seeded random
    ``fraction`` of the client's samples get the ``trigger`` stamped and their
    label set to ``target``; the others stay clean so the main task still
    trains.

    Defining property: exactly ``round(fraction * len(X))`` rows carry the
    trigger with label ``target``; all other rows and labels are unchanged.
    Returns ``(X', y')`` (copies), plus the poisoned row indices with
    ``return_indices=True``.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
    X = np.array(X, copy=True)
    y = np.array(y, copy=True)
    k = int(round(fraction * len(X)))
    idx = np.sort(np.random.default_rng(seed).choice(len(X), size=k, replace=False))
    if k:
        X[idx] = trigger.stamp(X[idx])
        y[idx] = target
    return (X, y, idx) if return_indices else (X, y)
