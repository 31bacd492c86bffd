"""FLAME on its edge cases against the plaintext reference, with 2 and 3
parties: two and three clients, a zero update, identical updates (ties in the
core distances and in the norms' median), odd and even counts, a tiny update
below the cosines' zero-row floor, with and without num_malicious."""

import pytest
import torch

import pgkernels


def _grid(U):
    return torch.round(U * 2**16) / 2**16


def _cases():
    g = torch.Generator().manual_seed(3)
    base = torch.randn(5, generator=g, dtype=torch.float64)
    out = {}
    out["n=2"] = _grid(torch.randn(2, 3, generator=g, dtype=torch.float64))
    U = _grid(torch.randn(3, 4, generator=g, dtype=torch.float64))
    U[1] = 0.0
    out["n=3,zero-row"] = U
    U = _grid(base + 0.3 * torch.randn(6, 5, generator=g, dtype=torch.float64))
    U[2] = U[0]
    U[3] = U[0]
    U[5] = -2 * base
    out["n=6,identical"] = U
    U = _grid(base + 0.3 * torch.randn(7, 5, generator=g, dtype=torch.float64))
    U[4] = 2.0 ** -9  # squared norm 5 * 2^-18: below the cosines' 2^-12 floor, a zero row there
    out["n=7,tiny"] = U
    return out


def _session():
    import crypten

    from pgkernels.defenses import reference as R

    res = {}
    for name, U in _cases().items():
        n = U.shape[0]
        for nm in (None, (n - 1) // 2):
            agg, adm = pgkernels.defenses.flame(crypten.cryptensor(U), num_malicious=nm, noise_lambda=0,
                                                return_selection=True)
            ragg, radm = R.flame(U.numpy(), num_malicious=nm, noise_lambda=0)
            want = torch.zeros(n, dtype=torch.float64)
            want[torch.tensor(radm)] = 1
            res[f"{name}/f={nm}"] = (pgkernels.decode(agg), torch.tensor(ragg), pgkernels.decode(adm), want)
    return res


@pytest.mark.parametrize("ws", [2, 3])
def test_flame_edges_match_reference(ws):
    res = pgkernels.launch(_session, world_size=ws, timeout=400)[0]
    for name, (agg, ragg, adm, want) in res.items():
        assert torch.equal(adm.round(), want), (name, adm, want)
        err = float((agg - ragg).abs().max())
        assert err <= 1e-3 * max(1.0, float(ragg.abs().max())) + 1e-3, (name, err)
