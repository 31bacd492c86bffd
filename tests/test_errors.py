"""Bad input gets a clear error naming the argument."""

import math

import pytest
import torch

import pgkernels


def _session():
    import crypten

    x = crypten.cryptensor(torch.ones(3))
    y = crypten.cryptensor(torch.ones(4))
    cases = {
        "not-mpc": lambda: pgkernels.ltz(torch.ones(3)),
        "bits-too-big": lambda: pgkernels.ltz(x, bits=65),
        "bits-too-small": lambda: pgkernels.ltz(x, bits=1),
        "bits-float": lambda: pgkernels.ltz(x, bits=8.0),
        "nan-public": lambda: pgkernels.lt(x, float("nan")),
        "inf-public-tensor": lambda: pgkernels.lt(x, torch.tensor([1.0, math.inf, 0.0])),
        "shape-mismatch": lambda: pgkernels.lt(x, y),
        "too-large-public": lambda: pgkernels.gt(x, 1e30),
        "binary-ptype": lambda: pgkernels.ltz(x.to(crypten.mpc.binary)),
        "where-scaled-condition": lambda: pgkernels.where(x, x, x),
        "where-bad-public-cond": lambda: pgkernels.where(torch.tensor([0, 2, 1]), x, x),
        "where-string": lambda: pgkernels.where(pgkernels.ltz(x), x, "a"),
    }
    out = {}
    for name, f in cases.items():
        try:
            f()
            out[name] = ("no error", "")
        except Exception as e:  # noqa: BLE001 -- the test inspects the type
            out[name] = (type(e).__name__, str(e))
    return out


EXPECTED = {
    "not-mpc": ("TypeError", "x must be a crypten MPCTensor"),
    "bits-too-big": ("ValueError", "bits must be in [2, 64]"),
    "bits-too-small": ("ValueError", "bits must be in [2, 64]"),
    "bits-float": ("TypeError", "bits must be an int"),
    "nan-public": ("ValueError", "y must be a finite real number"),
    "inf-public-tensor": ("ValueError", "y contains NaN or inf"),
    "shape-mismatch": ("ValueError", "y of shape (4,) does not broadcast"),
    "too-large-public": ("ValueError", "beyond the fixed-point range"),
    "binary-ptype": ("TypeError", "x must be arithmetic-shared"),
    "where-scaled-condition": ("ValueError", "condition must be a 0/1 share with scale 1"),
    "where-bad-public-cond": ("ValueError", "public condition must be boolean or 0/1"),
    "where-string": ("TypeError", "b must be an MPCTensor, a tensor or a number"),
}


@pytest.fixture(scope="module")
def errors():
    return pgkernels.launch(_session, world_size=2, timeout=120)[0]


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_error(errors, case):
    kind, msg = errors[case]
    want_kind, want_msg = EXPECTED[case]
    assert kind == want_kind, (case, kind, msg)
    assert want_msg in msg, (case, msg)
