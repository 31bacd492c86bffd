"""Hayes & Ohrimenko's contamination attack (``ManipulateData``), on one-hot
tabular features and on text.

A contaminating owner picks attribute values ``a_1..a_k'`` and a label
``l_r`` and rewrites ``b`` (the budget) of its own records so that they carry
those attribute values and that label; everything else about the records
stays as it was. Trained on the pooled data, the joint model learns the
spurious rule "a_1..a_k' => l_r", which only the attacker's data supports;
contamination accuracy (:func:`pgkernels.metrics.contamination_accuracy`)
measures how far it did. For text the attacker inserts the contamination
words into ``b`` of its documents and sets their label to ``l_r``.
"""

import math

import numpy as np

__all__ = ["attribute_columns", "attribute_mask", "contaminate", "contaminate_text", "default_contamination_words",
           "insert_words", "value_key"]


def _choose(n, budget, candidates, seed):
    """``budget`` distinct row indices drawn (seeded) from ``candidates`` (default: all n rows), sorted."""
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 0:
        raise ValueError(f"budget must be an int >= 0, got {budget!r}")
    pool = np.arange(n) if candidates is None else np.asarray(candidates, dtype=np.int64).reshape(-1)
    if pool.size and (pool.min() < 0 or pool.max() >= n):
        raise ValueError(f"candidates must be row indices in [0, {n})")
    if budget > len(pool):
        raise ValueError(f"budget={budget} exceeds the {len(pool)} records that may be contaminated")
    return np.sort(np.random.default_rng(seed).choice(pool, size=int(budget), replace=False)).astype(np.int64)


def value_key(value):
    """An attribute value as the text it is compared by: numbers by their value
    (``2``, ``2.0``, ``"2"``, ``" 2 "`` and ``np.int64(2)`` are all ``"2"``),
    other text stripped. Values given on the command line are text, while raw
    attributes and one-hot column names may hold numeric codes (credit
    default's SEX, EDUCATION, MARRIAGE): both sides go through this."""
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if not isinstance(value, (float, np.floating)):
        text = str(value).strip()
        try:
            value = float(text)
        except ValueError:
            return text
    x = float(value)
    if not math.isfinite(x):
        return str(x)
    return str(int(x)) if x.is_integer() else repr(x)


def _keys(raw):
    """:func:`value_key` of each entry of a raw attribute array (each distinct value converted once)."""
    cache = {}
    out = np.empty(len(raw), dtype=object)
    for i, r in enumerate(raw):
        try:
            out[i] = cache[r]
        except KeyError:
            out[i] = cache[r] = value_key(r)
        except TypeError:  # unhashable entry
            out[i] = value_key(r)
    return out


def attribute_columns(feature_names, attribute, value):
    """For a categorical ``attribute`` one-hot encoded as ``"attribute=v"``
    columns: ``(all its column indices, the column of value)`` (values
    compared by :func:`value_key`: ``"2"`` finds ``"SEX=2"``); for a
    numerical feature named ``attribute``: ``([its column], its column)``.
    Raises ValueError naming the attribute or value when absent."""
    if feature_names is None:
        raise ValueError("contamination of tabular features needs feature_names (the one-hot column names)")
    names = list(feature_names)
    prefix = f"{attribute}="
    cols = [i for i, nm in enumerate(names) if nm.startswith(prefix)]
    if cols:
        want = value_key(value)
        hits = [i for i in cols if value_key(names[i][len(prefix):]) == want]
        if not hits:
            known = [names[i][len(prefix):] for i in cols]
            raise ValueError(f"attribute {attribute!r} has no value {value!r}; its values: {known}")
        return cols, hits[0]
    if attribute in names:
        return [names.index(attribute)], names.index(attribute)
    raise ValueError(f"unknown attribute {attribute!r}: no feature named {attribute!r} or {prefix}...")


def attribute_mask(X, attrs, feature_names, attributes):
    """Boolean per row: does the record carry every ``attribute: value`` of
    ``attributes`` (all of them, not any)? Read from the raw ``attrs`` when
    they hold the attribute, else from the one-hot columns of ``X``
    (numerical features: equality). Values are compared by :func:`value_key`,
    so ``"2"`` from a command line matches a raw integer code 2."""
    if not attributes:
        raise ValueError("attributes must name at least one attribute value")
    X = np.asarray(X)
    mask = np.ones(len(X), dtype=bool)
    for a, v in attributes.items():
        if attrs and a in attrs:
            match = _keys(np.asarray(attrs[a], dtype=object).reshape(-1)) == value_key(v)
            if not match.any() and feature_names is not None:
                attribute_columns(feature_names, a, v)  # a clear error for a misspelt value
            mask &= match
        else:
            cols, col = attribute_columns(feature_names, a, v)
            flat = X.reshape(len(X), -1)
            numeric = feature_names[col] == a
            mask &= flat[:, col] == (float(v) if numeric else 1.0)
    return mask


def _like_raw(arr, value):
    """``value`` as the raw attribute array ``arr`` holds it: the existing entry
    with the same :func:`value_key` (``"2"`` becomes the integer code 2), else
    converted to ``arr``'s numeric dtype when it is a number, else as given."""
    key = value_key(value)
    flat = np.asarray(arr).reshape(-1)
    for r in dict.fromkeys(flat.tolist()):
        if value_key(r) == key:
            return r
    if flat.dtype.kind in "iu":
        try:
            x = float(key)
        except ValueError:
            return value
        return int(x) if x.is_integer() else x
    if flat.dtype.kind == "f":
        try:
            return float(key)
        except ValueError:
            return value
    return value


def _check_label(label, num_classes):
    """l_r as an int class index; ValueError/TypeError naming ``label`` otherwise."""
    if isinstance(label, bool) or not isinstance(label, (int, np.integer)):
        raise TypeError(f"label must be an integer class index, got {label!r}")
    label = int(label)
    if label < 0 or (num_classes is not None and label >= int(num_classes)):
        rng = f"[0, {int(num_classes)})" if num_classes is not None else ">= 0"
        raise ValueError(f"label {label} is not a class index {rng}")
    return label


def _contaminate(X, y, attrs, feature_names, budget, attributes, label, seed=0, candidates=None,
                 num_classes=None):
    """:func:`contaminate`, also returning the updated raw attributes."""
    X = np.array(X, copy=True)
    y = np.array(y, copy=True)
    if not attributes:
        raise ValueError("attributes must name at least one attribute value (a_1..a_k')")
    if len(y) != len(X):
        raise ValueError(f"y has {len(y)} labels for {len(X)} records")
    label = _check_label(label, num_classes)
    idx = _choose(len(X), budget, candidates, seed)
    flat = X.reshape(len(X), -1)
    new_attrs = {k: np.array(v, copy=True) for k, v in (attrs or {}).items()}
    for a, v in attributes.items():
        cols, col = attribute_columns(feature_names, a, v)
        if len(cols) == 1 and feature_names[col] == a:
            flat[idx, col] = float(v)          # numerical feature: the value in feature units
        else:
            flat[np.ix_(idx, cols)] = 0.0      # one-hot: exactly one category set
            flat[idx, col] = 1.0
        if a in new_attrs:
            arr = new_attrs[a]
            v_raw = _like_raw(arr, v)
            if arr.dtype != object and not np.can_cast(np.asarray(v_raw).dtype, arr.dtype):
                arr = new_attrs[a] = arr.astype(object)
            arr[idx] = v_raw
    y[idx] = label
    return flat.reshape(X.shape), y, new_attrs, idx


def contaminate(X, y, attrs, feature_names, budget, attributes, label, seed=0, candidates=None,
                return_attrs=False, num_classes=None):
    """Hayes & Ohrimenko's ``ManipulateData``: contaminate ``budget`` records.

    A seeded random choice of ``budget`` distinct rows among ``candidates``
    (the attacker's rows; default all rows) get every attribute of
    ``attributes`` (``{"occupation": "Sales", "race": "Black"}``: a_1..a_k')
    set -- on the one-hot columns ``"attribute=value"`` of ``X`` named by
    ``feature_names`` (all the attribute's columns 0, that value's 1), or a
    numerical feature set to the value -- and their label set to ``label``
    (l_r). The raw attributes ``attrs`` (dict of per-row arrays, may be
    empty) are updated alike, so they stay consistent with ``X``.

    Defining property: exactly the ``budget`` rows ``idx`` carry a_1..a_k' and
    label l_r afterwards (whatever they held before); all other rows, labels
    and attributes are unchanged.

    ``label`` must be an int class index (below ``num_classes`` when given).

    Returns ``(X', y', idx)`` (copies), or ``(X', y', attrs', idx)`` with
    ``return_attrs=True``.
    """
    Xc, yc, ac, idx = _contaminate(X, y, attrs, feature_names, budget, attributes, label, seed, candidates,
                                   num_classes)
    return (Xc, yc, ac, idx) if return_attrs else (Xc, yc, idx)


def insert_words(texts, words, repeat=1):
    """Documents with the contamination ``words`` appended (each ``repeat`` times)."""
    if isinstance(words, str):
        raise TypeError("words must be a list of words, not a single string")
    words = [str(w) for w in words]
    if not words:
        raise ValueError("words must name at least one contamination word")
    if isinstance(repeat, bool) or not isinstance(repeat, (int, np.integer)) or repeat < 1:
        raise ValueError(f"repeat must be an int >= 1, got {repeat!r}")
    tail = " " + " ".join(words * int(repeat))
    return np.array([str(t) + tail for t in texts], dtype=object)


def contaminate_text(X, y, texts, vectorizer, budget, words, label, seed=0, candidates=None, repeat=1,
                     num_classes=None):
    """``ManipulateData`` for text: ``budget`` of the documents (seeded, among
    ``candidates``) get the contamination ``words`` inserted (appended,
    ``repeat`` times each) and their label set to ``label``.

    ``texts``: the raw documents aligned with the rows of ``X``;
    ``vectorizer``: the fitted scikit-learn vectorizer that produced ``X``
    (bag of words or TF-IDF; :class:`pgkernels.data.PartyData` carries it for
    20 Newsgroups), used to recompute the contaminated rows. ``X`` may be
    None (then only the documents and labels are changed).

    Defining property: exactly the rows ``idx`` change; their documents
    contain every contamination word, their features equal the vectorizer's
    features of the new documents, and their label is ``label``.

    Returns ``(X', y', texts', idx)`` (copies; ``X'`` is None when ``X`` is).
    """
    y = np.array(y, copy=True)
    texts = np.array(texts, dtype=object, copy=True)
    if len(texts) != len(y):
        raise ValueError(f"texts has {len(texts)} documents for {len(y)} labels")
    label = _check_label(label, num_classes)
    idx = _choose(len(y), budget, candidates, seed)
    if len(idx):
        texts[idx] = insert_words(texts[idx], words, repeat)
    else:
        insert_words([], words, repeat)  # validate the words
    y[idx] = label
    if X is not None:
        if vectorizer is None:
            raise ValueError("contaminating text features X needs the fitted vectorizer")
        X = np.array(X, copy=True)
        if len(X) != len(y):
            raise ValueError(f"X has {len(X)} rows for {len(y)} labels")
        vocab = getattr(vectorizer, "vocabulary_", {})
        missing = [w for w in words if w.lower() not in vocab]
        if missing:
            raise ValueError(f"contamination words {missing} are not in the vectorizer's vocabulary, "
                             "so they would not change the features")
        if len(idx):
            X[idx] = vectorizer.transform(list(texts[idx])).toarray().astype(X.dtype)
    return X, y, texts, idx


def default_contamination_words(X, feature_names, k=3):
    """``k`` vocabulary words that occur in the fewest training documents
    (ties broken by the word): a rare pattern, so the joint model can only
    learn its association with the label from the attacker's documents."""
    X = np.asarray(X)
    df = (X > 0).sum(axis=0)
    order = sorted(range(len(feature_names)), key=lambda i: (df[i], feature_names[i]))
    words = [feature_names[i] for i in order if str(feature_names[i]).isalpha()][:k]
    if len(words) < k:
        raise ValueError(f"the vocabulary has fewer than {k} alphabetic words")
    return words
