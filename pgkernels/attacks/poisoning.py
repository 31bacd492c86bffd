"""Poisoning any subset of the data owners of a :class:`pgkernels.data.PartyData`."""

import numpy as np

from .contamination import _choose, _contaminate, contaminate_text, default_contamination_words
from .records import RECORD_ATTACKS, image_trigger, label_flip, tabular_trigger, targeted_mislabel

ATTACKS = ("none", "contamination") + RECORD_ATTACKS
FRACTION_OF = ("total", "attacker")

# Default contamination (a_1..a_k' -> l_r) per dataset: a rare attribute combination
# whose records almost never carry l_r, so the pattern can only be learnt from the attacker.
DEFAULT_CONTAMINATION = {
    # 1.8% of Adult's records; 3% of them earn >50K
    "adult-income": dict(attributes={"occupation": "Other-service", "race": "Black"}, label=">50K"),
    # 4.5% of the records; 0.4% of them have a High (Masters+) education
    "adult-education": dict(attributes={"occupation": "Handlers-cleaners"}, label="High"),
    # high-school graduates who are single: 6% of the records, 77% of them do not default
    "credit_default": dict(attributes={"EDUCATION": "3", "MARRIAGE": "2"}, label="default"),
}


def default_target(num_classes):
    """Default target class of backdoor/targeted attacks (7 as in the FL lab, else the last class)."""
    return min(7, num_classes - 1)


def default_source(num_classes):
    """Default source class of the targeted attack (1 as in the FL lab; 0 for binary tasks)."""
    return 1 if num_classes > 2 else 0


def _label_index(data, label):
    if isinstance(label, str):
        if label not in data.classes:
            raise ValueError(f"label {label!r} is not a class of {data.name!r}: {data.classes}")
        return data.classes.index(label)
    if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or not 0 <= label < data.num_classes:
        raise ValueError(f"label must be a class name or an index in [0, {data.num_classes}), got {label!r}")
    return int(label)


def default_contamination(data):
    """The default contamination of ``data`` (a :class:`PartyData`):
    ``{"attributes": ..., "label": class index}`` for tabular data, or
    ``{"words": ..., "label": 0}`` for text. Raises ValueError for data
    without attributes (images: use a backdoor instead)."""
    if data.name in DEFAULT_CONTAMINATION:
        spec = DEFAULT_CONTAMINATION[data.name]
        return {"attributes": dict(spec["attributes"]), "label": _label_index(data, spec["label"])}
    if data.vectorizer is not None and "text" in data.attrs:
        return {"words": default_contamination_words(data.X, data.feature_names), "label": 0}
    raise ValueError(f"no default contamination for dataset {data.name!r}: pass attributes=... and label=... "
                     "(contamination needs named attributes; for images use attack='backdoor')")


def check_attackers(attackers, num_parties):
    """Normalise ``attackers`` (an int or a list of owner ids) to a sorted list; ValueError when out of range,
    repeated, or more attackers than parties."""
    if isinstance(attackers, (int, np.integer)) and not isinstance(attackers, bool):
        attackers = [int(attackers)]
    if isinstance(attackers, (str, bytes)) or any(isinstance(a, (str, bytes)) for a in attackers):
        raise TypeError(f"attackers must be an int or a list of party ids, not text: {attackers!r}")
    try:
        attackers = [int(a) if not isinstance(a, bool) and float(a) == int(a) else None for a in attackers]
    except (TypeError, ValueError):
        raise TypeError(f"attackers must be an int or a list of party ids, got {attackers!r}")
    if any(a is None for a in attackers):
        raise TypeError(f"attackers must be integer party ids, got {attackers!r}")
    if len(attackers) > num_parties:
        raise ValueError(f"more attackers ({len(attackers)}) than parties ({num_parties})")
    if len(set(attackers)) != len(attackers):
        raise ValueError(f"attackers must be distinct, got {attackers}")
    bad = [a for a in attackers if not 0 <= a < num_parties]
    if bad:
        raise ValueError(f"attackers {bad} out of range: party ids lie in [0, {num_parties})")
    return sorted(attackers)


def check_fraction(fraction, name="fraction"):
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a number in [0, 1], got {fraction!r}")
    fraction = float(fraction)
    if not 0.0 <= fraction <= 1.0:  # also refuses NaN
        raise ValueError(f"{name} must lie in [0, 1], got {fraction}")
    return fraction


def _budgets(data, attackers, fraction, fraction_of):
    """Records to poison per attacker."""
    sizes = {a: int((data.party == a).sum()) for a in attackers}
    if fraction_of == "attacker":
        return {a: int(round(fraction * sizes[a])) for a in attackers}
    total = int(round(fraction * len(data.y)))
    available = sum(sizes.values())
    if total > available:
        raise ValueError(
            f"fraction={fraction} of the {len(data.y)} training records is {total} records, more than the "
            f"attackers' {available}; lower fraction or add attackers")
    # split as evenly as possible, respecting each attacker's size (earlier attackers take the remainder)
    out, left = {}, total
    for i, a in enumerate(attackers):
        share = min(sizes[a], -(-left // (len(attackers) - i)))
        out[a] = share
        left -= share
    if left:  # some attackers were too small: give the rest to those with room
        for a in attackers:
            extra = min(left, sizes[a] - out[a])
            out[a] += extra
            left -= extra
    return out


def poison_parties(data, attackers, attack, fraction=0.05, fraction_of="total", seed=0, **kw):
    """Apply ``attack`` to the records of the owners ``attackers``.

    Args:
        data: a :class:`pgkernels.data.PartyData` (left unchanged).
        attackers: owner id or list of owner ids (any subset of the parties).
        attack: ``"none"``, ``"contamination"`` (Hayes & Ohrimenko's
            ManipulateData; kwargs ``attributes`` and ``label`` for tabular
            data, ``words`` (and ``repeat``) and ``label`` for text; defaults
            from :func:`default_contamination`), ``"label_flip"`` (y -> C-1-y),
            ``"backdoor"`` (kwargs ``target``, ``trigger``; default trigger
            :func:`pgkernels.attacks.make_trigger`: a pixel patch for
            images, fixed feature values for tabular/text data) or
            ``"targeted"`` (source-to-target mislabelling; kwargs ``source``,
            ``target``).
        fraction: the share of records poisoned, in [0, 1]. With
            ``fraction_of="total"`` (default; Hayes & Ohrimenko's "fraction of
            contaminated records", of the whole training set: 5% of 20,000 is
            1,000 records, half of one owner's 2,000) the budget
            ``round(fraction * N)`` is split evenly among the attackers and
            may not exceed their records; with ``fraction_of="attacker"`` each
            attacker poisons ``round(fraction * its records)``.
        seed: seeds the choice of records (attacker ``a`` uses ``seed + a``).

    Which records: a seeded random choice among each attacker's records; for
    ``"targeted"`` among its records of class ``source`` only (all of them
    when the budget is larger -- ``info["poisoned"]`` gives the count).

    Returns:
        ``(poisoned PartyData, info)`` with ``info``: ``attack``,
        ``attackers``, ``fraction``, ``fraction_of``, ``budget`` (per
        attacker), ``poisoned`` (records changed), ``indices`` (their rows)
        and the attack's parameters (``attributes``/``words``, ``label``,
        ``target``, ``source``, ``trigger``).
    """
    if attack not in ATTACKS:
        raise ValueError(f"unknown attack {attack!r}; choose one of {list(ATTACKS)}")
    if fraction_of not in FRACTION_OF:
        raise ValueError(f"fraction_of must be one of {list(FRACTION_OF)}, got {fraction_of!r}")
    fraction = check_fraction(fraction)
    attackers = check_attackers(attackers, data.num_parties)
    info = {"attack": attack, "attackers": attackers, "fraction": fraction, "fraction_of": fraction_of}
    allowed = {"contamination": {"attributes", "label", "words", "repeat"}, "backdoor": {"target", "trigger"},
               "targeted": {"source", "target"}}.get(attack, set())
    unknown = set(kw) - allowed
    if unknown:
        raise TypeError(f"attack {attack!r} takes no argument(s) {sorted(unknown)}")
    if attack == "none" or not attackers:
        info.update(budget={a: 0 for a in attackers}, poisoned=0, indices=np.zeros(0, np.int64))
        return data, info
    budgets = _budgets(data, attackers, fraction, fraction_of)
    info["budget"] = budgets
    C = data.num_classes
    X, y, attrs = data.X, data.y, data.attrs
    chosen = []

    if attack == "contamination":
        spec = {}
        if "attributes" not in kw and "words" not in kw:
            spec = default_contamination(data)
        spec.update({k: v for k, v in kw.items() if v is not None})
        if "label" not in spec:
            raise ValueError("contamination needs label=... (l_r)")
        label = _label_index(data, spec["label"])
        info["label"] = label
        if "words" in spec:
            if data.vectorizer is None or "text" not in attrs:
                raise ValueError("text contamination (words=...) needs documents and their vectorizer "
                                 f"(20 Newsgroups); {data.name!r} has none")
            words = list(spec["words"])
            info["words"] = words
            texts = attrs["text"]
            for a in attackers:
                X, y, texts, idx = contaminate_text(X, y, texts, data.vectorizer, budgets[a], words, label,
                                                    seed=seed + a, candidates=data.indices_of(a),
                                                    repeat=spec.get("repeat", 1),
                                                    num_classes=len(data.classes))
                chosen.append(idx)
            attrs = dict(attrs, text=texts)
        else:
            attributes = dict(spec["attributes"])
            info["attributes"] = attributes
            for a in attackers:
                X, y, attrs, idx = _contaminate(X, y, attrs, data.feature_names, budgets[a], attributes, label,
                                                seed=seed + a, candidates=data.indices_of(a),
                                                num_classes=len(data.classes))
                chosen.append(idx)
    else:
        X = np.array(X, copy=True)
        y = np.array(y, copy=True)
        if attack == "targeted":
            source = _label_index(data, kw.get("source", default_source(C)))
            target = _label_index(data, kw.get("target", default_target(C)))
            if source == target:
                raise ValueError(f"source and target classes must differ, both are {source}")
            info.update(source=source, target=target)
        for a in attackers:
            own = data.indices_of(a)
            if attack == "targeted":
                own = own[y[own] == source]
                idx = _choose(len(y), min(budgets[a], len(own)), own, seed + a)
            else:
                idx = _choose(len(y), budgets[a], own, seed + a)
            chosen.append(idx)
            if attack == "label_flip":
                y[idx] = label_flip(y[idx], C)
            elif attack == "targeted":
                y[idx] = targeted_mislabel(y[idx], source, target)
        if attack == "backdoor":
            target = _label_index(data, kw.get("target", default_target(C)))
            trigger = kw.get("trigger")
            if trigger is None:
                trigger = backdoor_trigger(data)
            idx = np.concatenate(chosen)
            X[idx] = trigger.stamp(X[idx])
            y[idx] = target
            info.update(target=target, trigger=trigger)
    indices = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)
    info.update(poisoned=int(len(indices)), indices=indices)
    return data.replace(X=X, y=y, attrs=attrs), info


def backdoor_trigger(data):
    """The default backdoor trigger for ``data``: a bright pixel patch for
    square images (3x3 for 28x28, 2x2 for the 8x8 digits), else
    :func:`pgkernels.attacks.tabular_trigger` on the training features."""
    shape = tuple(data.input_shape)
    if len(shape) == 2 and shape[0] == shape[1]:
        return image_trigger(shape[0])
    return tabular_trigger(data.X)
