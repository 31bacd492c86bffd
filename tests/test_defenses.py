"""Gram/distances and robust aggregators in MPC against their plaintext references."""

import numpy as np
import pytest
import torch

import pgkernels
from pgkernels.defenses import reference as R


def _grid(t):
    """Values on the fixed-point grid, so MPC and float64 see the same inputs."""
    return torch.round(t * 2**16) / 2**16


def _session():
    import crypten

    g = torch.Generator().manual_seed(0)
    out = {}
    for n, d, f in ((7, 33, 1), (9, 40, 2), (12, 17, 3)):
        U = _grid(torch.randn(n, d, generator=g, dtype=torch.float64) * 0.5)
        U[n - f:] += 4.0  # the attackers sit far away
        eu = crypten.cryptensor(U)
        Un = U.numpy()
        tag = f"n={n},d={d},f={f}"
        out[f"gram/{tag}"] = (pgkernels.decode(pgkernels.gram(eu)), U @ U.T)
        out[f"dist/{tag}"] = (pgkernels.decode(pgkernels.pairwise_sq_dist(eu)), torch.cdist(U, U) ** 2)
        out[f"scores/{tag}"] = (pgkernels.decode(pgkernels.defenses.krum_scores(eu, f)),
                                torch.tensor(R.krum_scores(Un, f)))
        k, oh = pgkernels.defenses.krum(eu, f, return_selection=True)
        rk, ri = R.krum(Un, f)
        out[f"krum/{tag}"] = (pgkernels.decode(k), torch.tensor(rk))
        out[f"krum-selected/{tag}"] = (pgkernels.decode(oh), torch.nn.functional.one_hot(torch.tensor(ri), n).double())
        keep = n - f - 1
        mk, sel = pgkernels.defenses.multi_krum(eu, f, keep, return_selection=True)
        rmk, rsel = R.multi_krum(Un, f, keep)
        out[f"multi-krum/{tag}"] = (pgkernels.decode(mk), torch.tensor(rmk))
        want_sel = torch.zeros(n, dtype=torch.float64)
        want_sel[torch.tensor(rsel)] = 1
        out[f"multi-krum-selected/{tag}"] = (pgkernels.decode(sel), want_sel)
        out[f"fedavg/{tag}"] = (pgkernels.decode(pgkernels.defenses.fedavg(eu)), torch.tensor(R.fedavg(Un)))
        out[f"median/{tag}"] = (pgkernels.decode(pgkernels.defenses.median(eu)), torch.tensor(R.median(Un)))
        out[f"trimmed/{tag}"] = (pgkernels.decode(pgkernels.defenses.trimmed_mean(eu, 0.2)),
                                 torch.tensor(R.trimmed_mean(Un, 0.2)))
    # Bulyan: n = 4f + 3
    # honest clients at increasing spread, so Krum scores are far apart compared
    # with fixed-point rounding (near-ties may be broken either way in MPC)
    spread = (0.2 + 0.15 * torch.arange(11, dtype=torch.float64)).view(11, 1)
    Ub = _grid(torch.randn(11, 20, generator=g, dtype=torch.float64) * spread)
    Ub[-2:] += 3.0
    b, picks = pgkernels.defenses.bulyan(crypten.cryptensor(Ub), 2, return_selection=True)
    rb, chosen = R.bulyan(Ub.numpy(), 2)
    out["bulyan"] = (pgkernels.decode(b), torch.tensor(rb))
    out["bulyan-selected"] = (pgkernels.decode(picks).argmax(1).double(), torch.tensor(chosen, dtype=torch.float64))

    # norm clipping and FLTrust (rows with very different norms, one opposed to g)
    U = _grid(torch.randn(8, 30, generator=g, dtype=torch.float64))
    U[0] *= 20
    U[1] *= 0.05
    gs = _grid(torch.randn(30, generator=g, dtype=torch.float64))
    U[2] = -gs
    eu = crypten.cryptensor(U)
    out["norm-clip"] = (pgkernels.decode(pgkernels.defenses.norm_clip(eu, 2.0)),
                        torch.tensor(R.norm_clip(U.numpy(), 2.0)))
    out["fltrust"] = (pgkernels.decode(pgkernels.defenses.fltrust(eu, gs)),
                      torch.tensor(R.fltrust(U.numpy(), gs.numpy())))
    out["fltrust-all-distrusted"] = (pgkernels.decode(pgkernels.defenses.fltrust(eu[2:3], gs)),
                                     torch.zeros(30, dtype=torch.float64))
    # range-robust roots over the whole supported range
    from pgkernels.protocols import roots

    xs = torch.tensor([2.0 ** e for e in range(-14, 37, 3)] + [0.3, 3.99, 12345.0], dtype=torch.float64)
    ex = crypten.cryptensor(xs)
    out["sqrt"] = (pgkernels.decode(roots.sqrt(ex)), xs.sqrt())
    out["inv_sqrt*2^8"] = (pgkernels.decode(roots.inv_sqrt(ex, shift=8)), 256 / xs.sqrt())
    out["sqrt-of-zero"] = (pgkernels.decode(roots.sqrt(crypten.cryptensor(torch.zeros(3)))), torch.zeros(3))

    # cosine similarity and norms (zero row included)
    X = _grid(torch.randn(6, 25, generator=g, dtype=torch.float64) * 3)
    X[4] = 0
    Y = _grid(torch.randn(3, 25, generator=g, dtype=torch.float64) * 0.1)
    ex = crypten.cryptensor(X)
    out["cosine"] = (pgkernels.decode(pgkernels.cosine_similarity(ex)), torch.tensor(R.cosine_similarity(X.numpy())))
    out["cosine-xy"] = (pgkernels.decode(pgkernels.cosine_similarity(ex, crypten.cryptensor(Y))),
                        torch.tensor(R.cosine_similarity(X.numpy(), Y.numpy())))
    out["norm"] = (pgkernels.decode(pgkernels.norm(ex, dim=1)), X.norm(dim=1))

    # FLAME and AUROR: a benign majority around one direction, colluding attackers apart
    for n, d, f in ((10, 40, 3), (7, 24, 2)):
        base = torch.randn(d, generator=g, dtype=torch.float64)
        U = base + 0.4 * torch.randn(n, d, generator=g, dtype=torch.float64)
        U[:, : d // 4] *= 0.3
        U[n - f:] = -2.0 * base + 0.1 * torch.randn(f, d, generator=g, dtype=torch.float64)
        U[n - f:, : d // 4] += 3.0  # AUROR's indicative features
        U *= (0.5 + torch.rand(n, 1, generator=g, dtype=torch.float64))
        U = _grid(U)
        eu = crypten.cryptensor(U)
        tag = f"n={n},d={d},f={f}"
        for nm in (None, f):
            agg, adm = pgkernels.defenses.flame(eu, num_malicious=nm, noise_lambda=0, return_selection=True)
            ragg, radm = R.flame(U.numpy(), num_malicious=nm, noise_lambda=0)
            want = torch.zeros(n, dtype=torch.float64)
            want[torch.tensor(radm)] = 1
            out[f"flame/{tag}/f={nm}"] = (pgkernels.decode(agg), torch.tensor(ragg))
            out[f"flame-admitted/{tag}/f={nm}"] = (pgkernels.decode(adm), want)
        agg, kept = pgkernels.defenses.auror(eu, return_selection=True)
        ragg, rkept = R.auror(U.numpy())
        want = torch.zeros(n, dtype=torch.float64)
        want[torch.tensor(rkept)] = 1
        out[f"auror/{tag}"] = (pgkernels.decode(agg), torch.tensor(ragg))
        out[f"auror-kept/{tag}"] = (pgkernels.decode(kept), want)
    # AUROR's exact ties: identical clients, and a uniform attack offset (no
    # coordinate stands out, so no indicative feature): everyone is kept
    for tag, U in {"identical": torch.full((7, 5), 0.375, dtype=torch.float64),
                   "no-indicative": _grid(torch.cat([torch.randn(6, 20, generator=g, dtype=torch.float64),
                                                     torch.full((2, 20), 3.0, dtype=torch.float64)]))}.items():
        agg, kept = pgkernels.defenses.auror(crypten.cryptensor(U), return_selection=True)
        ragg, rkept = R.auror(U.numpy())
        assert len(rkept) == U.shape[0]
        out[f"auror-tie/{tag}"] = (pgkernels.decode(agg), torch.tensor(ragg))
        out[f"auror-tie-kept/{tag}"] = (pgkernels.decode(kept), torch.ones(U.shape[0], dtype=torch.float64))
    # FLAME's noise: std lambda * S per coordinate
    U = _grid(torch.randn(5, 4000, generator=g, dtype=torch.float64))
    eu = crypten.cryptensor(U)
    noisy = pgkernels.decode(pgkernels.defenses.flame(eu, noise_lambda=0.01))
    clean = pgkernels.decode(pgkernels.defenses.flame(eu, noise_lambda=0))
    S = float(U.norm(dim=1).median())
    out["flame-noise-std/lambda*S"] = (torch.tensor([float((noisy - clean).std()) / (0.01 * S)]),
                                       torch.tensor([1.0], dtype=torch.float64))

    eu = crypten.cryptensor(torch.zeros(4, 3))
    errs = {}
    for name, fn in {
        "krum-too-many-malicious": lambda: pgkernels.defenses.krum(eu, 1),
        "bulyan-too-few": lambda: pgkernels.defenses.bulyan(crypten.cryptensor(torch.zeros(10, 2)), 2),
        "not-2d": lambda: pgkernels.defenses.krum(crypten.cryptensor(torch.zeros(5)), 1),
        "to-keep": lambda: pgkernels.defenses.multi_krum(crypten.cryptensor(torch.zeros(5, 2)), 1, 0),
        "gram-1d": lambda: pgkernels.gram(crypten.cryptensor(torch.zeros(3))),
        "flame-f": lambda: pgkernels.defenses.flame(crypten.cryptensor(torch.ones(6, 2)), num_malicious=3),
        "auror-iters": lambda: pgkernels.defenses.auror(crypten.cryptensor(torch.ones(6, 2)), iters=0),
        "cosine-shape": lambda: pgkernels.cosine_similarity(crypten.cryptensor(torch.ones(6, 2)),
                                                            crypten.cryptensor(torch.ones(6, 3))),
    }.items():
        try:
            fn()
            errs[name] = "no error"
        except Exception as e:  # noqa: BLE001
            errs[name] = f"{type(e).__name__}: {e}"
    out["errors"] = errs
    return out


@pytest.fixture(scope="module", params=[2, 3], ids=lambda n: f"{n}pc")
def results(request):
    return pgkernels.launch(_session, world_size=request.param, timeout=600)[0]


def test_against_references(results):
    bad = []
    for name, val in results.items():
        if name == "errors":
            continue
        got, want = val
        # fixed-point: truncations leave a few units of 2^-16 (relative for big distances);
        # rules built on inverse norms (FLTrust) keep about 2-3 significant digits
        tol = 1e-3 + 1e-6 * float(want.abs().max())
        if name.startswith("flame-noise"):
            tol = 0.1  # sample std of 4000 draws
        if name.startswith(("cosine", "flame/", "norm")):
            # inverse norms and roots: 16 fractional bits, and 3-party truncation errors
            tol = 3e-3 * float(want.abs().max()) + 2e-3
        if name.startswith("fltrust"):
            tol = 2e-2 * float(want.abs().max()) + 1e-3
        if name in ("sqrt", "inv_sqrt*2^8"):
            bad.extend(f"{name}[{i}]: {float(a)} vs {float(b)}" for i, (a, b) in enumerate(zip(got, want))
                       if abs(float(a) - float(b)) > 5e-4 * abs(float(b)) + 2 * 2**-16)
            continue
        if got.shape != want.shape or float((got - want.double()).abs().max()) > tol:
            bad.append(f"{name}: {float((got - want.double()).abs().max()) if got.shape == want.shape else 'shape'}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("case,expected", [
    ("krum-too-many-malicious", "ValueError: Krum with num_malicious=1 needs at least 5 clients"),
    ("not-2d", "ValueError: updates must be 2-D"),
    ("bulyan-too-few", "ValueError: Bulyan with num_malicious=2 needs at least 11 clients, got 10"),
    ("to-keep", "ValueError: to_keep must be an int in [1, 5]"),
    ("gram-1d", "ValueError: X must be 2-D"),
    ("flame-f", "ValueError: num_malicious must be an int in [0, n/2) for FLAME"),
    ("auror-iters", "ValueError: iters must be an int >= 1"),
    ("cosine-shape", "ValueError: Y must be 2-D with 2 columns"),
])
def test_errors(results, case, expected):
    assert results["errors"][case].startswith(expected), results["errors"][case]
