"""Inputs shared by the comparison tests, built identically in every party.

Values are raw ring integers (fixed-point encoded with 16 fractional bits), so
results are checked against the plaintext comparison of the encoded values --
CrypTen's float decoding is not exact for large magnitudes.
"""

import torch

FRAC = 16
I64_MIN, I64_MAX = -(2**63), 2**63 - 1


def edge_values():
    one = 1 << FRAC
    v = [0, 1, -1, one, -one, 2, -2, 12345 * one, -12345 * one, I64_MAX, I64_MIN,
         I64_MAX - 1, I64_MIN + 1, 2**62, -(2**62), 2**31, -(2**31), 2**31 - 1, -(2**31) - 1]
    return torch.tensor(v, dtype=torch.long)


def random_values(n, seed, bits=64):
    g = torch.Generator().manual_seed(seed)
    if bits == 64:
        return torch.randint(I64_MIN, I64_MAX, (n,), generator=g, dtype=torch.long)
    lim = 2 ** (bits - 1)
    return torch.randint(-lim, lim, (n,), generator=g, dtype=torch.long)


def bounded_edges(bits):
    lim = 2 ** (bits - 1)
    v = torch.tensor([0, 1, -1, lim - 1, -lim, lim // 2, -lim // 2, 2, -2], dtype=torch.long)
    return v[(v >= -lim) & (v < lim)]


ORDER_BIG = 2**62 - 1  # differences of any two order-statistics inputs stay below 2^63


def order_inputs(n, d, kind, seed):
    """(n, d) raw ring inputs for the order statistics: random, ties, all
    equal, or extremes (+-ORDER_BIG every few rows)."""
    g = torch.Generator().manual_seed(seed)
    if kind == "random":
        return torch.randint(-(2**40), 2**40, (n, d), generator=g)
    if kind == "ties":
        return torch.randint(-2, 3, (n, d), generator=g) << 16
    if kind == "equal":
        return torch.full((n, d), -7 << 16, dtype=torch.long)
    if kind == "extremes":
        v = torch.randint(-(2**40), 2**40, (n, d), generator=g)
        v[::3] = ORDER_BIG
        v[1::3] = -ORDER_BIG
        return v
    raise ValueError(kind)


def share(raw, frac=FRAC):
    """A random sharing of raw ring values, as an MPCTensor with `frac` fractional bits."""
    import crypten

    t = crypten.cryptensor(raw, precision=0)  # random PRZS sharing of the raw integers
    return crypten.mpc.MPCTensor.from_shares(t.share.clone(), precision=frac)


def reveal(x):
    return x._tensor.reveal()


def spy_launch(monkeypatch, module, secrets_):
    """Wrap ``module.launch``: check that what every party receives (fn, args,
    kwargs) holds none of ``secrets_`` (arrays) in any encoding, and that each
    party's own input holds shares only (keys for ranks >= 1). Returns the
    list of checked calls."""
    import cloudpickle
    import numpy as np

    from pgkernels.runtime.inputs import Share, encode

    real = module.launch
    calls = []

    def patterns(a):
        a = np.ascontiguousarray(np.asarray(a, dtype=np.float64).ravel()[:8])
        return [a.tobytes(), a.astype(np.float32).tobytes(), encode(a, "x").numpy().tobytes()]

    def shares_only(obj, rank):
        if isinstance(obj, Share):
            assert (obj.data is None) == (rank > 0)
            return 1
        if isinstance(obj, dict):
            return sum(shares_only(v, rank) for v in obj.values())
        if isinstance(obj, (list, tuple)):
            return sum(shares_only(v, rank) for v in obj)
        assert not hasattr(obj, "shape"), f"party {rank} receives a raw array"
        return 0

    def spy(fn, *a, **kw):
        common = cloudpickle.dumps((fn, a, {k: v for k, v in kw.items() if k != "party_inputs"}))
        for s in secrets_:
            for p in patterns(s):
                assert p not in common, "a private array reaches every party"
        own = kw.get("party_inputs")
        assert own is not None
        counts = [shares_only(o, r) for r, o in enumerate(own)]
        assert counts[0] > 0 and len(set(counts)) == 1
        calls.append(counts)
        return real(fn, *a, **kw)

    monkeypatch.setattr(module, "launch", spy)
    return calls
