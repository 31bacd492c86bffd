"""Noise that protects something comes from AES-CTR (runtime.rng), checked
against scipy's distributions, and is independent of torch's seed."""

import numpy as np
import pytest
import torch
from scipy import stats

from pgkernels.runtime import rng


def test_uniform_in_open_closed_unit_interval():
    u = rng.uniform(200_000).numpy()
    assert u.min() > 0 and u.max() <= 1
    assert stats.kstest(u, "uniform").pvalue > 1e-4


def test_normal_matches_scipy_normal():
    z = rng.normal(200_001).numpy()
    assert z.shape == (200_001,)
    assert stats.kstest(z, "norm").pvalue > 1e-4
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01
    assert rng.normal(0).numel() == 0 and rng.normal(1).numel() == 1


def test_not_reproducible_from_torch_or_numpy_seeds():
    torch.manual_seed(0)
    np.random.seed(0)
    a = rng.normal(64)
    torch.manual_seed(0)
    np.random.seed(0)
    b = rng.normal(64)
    assert not torch.equal(a, b)
    torch.manual_seed(0)
    assert not torch.allclose(a, torch.randn(64, dtype=torch.float64))


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_bad_sizes(bad):
    with pytest.raises(ValueError, match="n must be an int >= 0"):
        rng.normal(bad)
