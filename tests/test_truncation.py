"""Dealer-assisted division by public integers (pgkernels.protocols.truncation)
against floor division in plaintext, with 2 and 3 parties; and CrypTen's local
truncation failing on the same inputs, which is why the servers use it."""

import pytest
import torch

import pgkernels

from _cases import reveal, share

LIM = 2 ** 62
DIVISORS = [1, 2, 3, 7, 2 ** 16, 7919, 2 ** 31, 2 ** 32 + 1, 2 ** 40, 2 ** 62]


def _inputs():
    g = torch.Generator().manual_seed(11)
    edges = torch.tensor([-LIM, LIM - 1, 0, -1, 1, 2 ** 61, -(2 ** 61), LIM - 2 ** 16, -LIM + 1, 2 ** 16, -(2 ** 16)])
    return torch.cat([edges, torch.randint(-LIM, LIM, (20000,), generator=g)])


def _session():
    import crypten

    from pgkernels.protocols import truncation

    x = _inputs()
    ex = share(x, frac=0)
    out = {}
    for D in DIVISORS:
        a = ex._tensor.clone()
        truncation.div_(a, D)
        out[f"D={D}"] = a.reveal()
    a = ex._tensor.clone()
    truncation.div_(a, -3)
    out["D=-3"] = a.reveal()
    # a divisor per element (CrypTen divides rows by different powers of two)
    per = torch.tensor([1, 2, 2 ** 16, 5]).repeat(x.numel() // 4 + 1)[: x.numel()]
    a = ex._tensor.clone()
    truncation.div_(a, per)
    out["per-element"] = (a.reveal(), per)
    for bad in (0, 2 ** 62 + 1):
        try:
            truncation.div_(ex._tensor.clone(), bad)
        except (ValueError, ZeroDivisionError) as e:
            out[f"bad={bad}"] = str(e)
    # empty and 1-element inputs
    for shape in [(0,), (1,), (3, 0)]:
        e = share(torch.ones(shape, dtype=torch.long) * 12345, frac=0)
        truncation.div_(e._tensor, 3)
        out[f"shape={shape}"] = reveal(e)
    # CrypTen's own local truncation on the same values (2 parties: each divides its share)
    a = ex._tensor.clone()
    a.div_(2 ** 16)
    out["crypten-local"] = a.reveal()
    # installed: CrypTen's multiplications truncate through the protocol
    xf = torch.tensor([1.5, -2.25, 3.0, 0.0, -1000.5, 2.0 ** 10])
    with truncation.exact():
        y = crypten.cryptensor(xf)
        out["mul"] = ((y * y).get_plain_text(), (y.matmul(y)).get_plain_text(), (y / 3).get_plain_text())
        out["installed"] = truncation.installed()
    out["restored"] = truncation.installed()
    return out


@pytest.fixture(scope="module", params=[2, 3], ids=lambda n: f"{n}pc")
def results(request):
    return pgkernels.launch(_session, world_size=request.param, timeout=600)[0]


@pytest.mark.parametrize("D", DIVISORS + [-3])
def test_within_two_units_of_floor_division(results, D):
    x = _inputs()
    ref = torch.div(x, abs(D), rounding_mode="floor") * (1 if D > 0 else -1)
    err = (results[f"D={D}"] - ref).abs()
    assert int(err.max()) <= 2, int(err.max())
    if D == 1:
        assert torch.equal(results["D=1"], x)


def test_per_element_divisors(results):
    got, per = results["per-element"]
    ref = torch.div(_inputs(), per, rounding_mode="floor")
    assert int((got - ref).abs().max()) <= 2


def test_bad_divisors_and_shapes(results):
    assert "division" in results["bad=0"] and "zero" in results["bad=0"]
    assert "divisor must be in [1, 2^62]" in results[f"bad={2 ** 62 + 1}"]
    assert results["shape=(0,)"].shape == (0,)
    assert abs(results["shape=(1,)"].item() - 12345 // 3) <= 2
    assert results["shape=(3, 0)"].shape == (3, 0)


def test_crypten_local_truncation_fails_where_this_does_not(results, request):
    """The attacker's view: intermediates pushed towards 2^62 make CrypTen's
    truncation fail with probability about |x| / 2^63 (here about a third of
    the uniform inputs) by about 2^48; the protocol's error stays within 2 units."""
    x = _inputs()
    ref = torch.div(x, 2 ** 16, rounding_mode="floor")
    bad = (results["crypten-local"] - ref).abs() > 2
    assert int(bad.sum()) > 1000
    assert int((results["D=65536"] - ref).abs().max()) <= 2


def test_crypten_ops_under_exact_truncation(results):
    sq, dot, third = results["mul"]
    xf = torch.tensor([1.5, -2.25, 3.0, 0.0, -1000.5, 2.0 ** 10], dtype=torch.float64)
    torch.testing.assert_close(sq.double(), xf * xf, atol=1e-3, rtol=1e-6)
    torch.testing.assert_close(dot.double(), (xf * xf).sum(), atol=1e-2, rtol=1e-6)
    torch.testing.assert_close(third.double(), xf / 3, atol=1e-3, rtol=0)
    assert results["installed"] is True and results["restored"] is False
