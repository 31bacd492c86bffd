"""The CUDA kernels (csrc/cuda/) against the CPU kernels, and CUDA sessions.

Tests marked ``cuda`` need a GPU and an extension built with CUDA
(``FORCE_CUDA=1``); they are skipped elsewhere. They check that every op
gives the CPU's words bit for bit for the same inputs (the same shares and
the same dealer material: both backends read one set of material words), for
2 and 3 parties, edge values and sizes from 1 to 1e7, and that a session
launched with ``device="cuda"`` computes the right results. The unmarked
tests run everywhere: the device argument's errors on a machine without CUDA.
"""

import pytest
import torch

from pgkernels import ops
from pgkernels.runtime.device import check_device

CUDA = torch.cuda.is_available() and ops.cuda_built()


def cuda(fn):
    """Marked ``cuda`` (select with ``-m cuda``) and skipped without a usable GPU."""
    return pytest.mark.cuda(pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU and pgkernels built with CUDA")(fn))

EDGE = [0, 1, -1, 2**63 - 1, -(2**63), 2**62, -(2**62), 2**32, 12345, -12345]
SIZES = [1, 2, 63, 64, 65, 1000, 4097, 100_003]
BIG = 10**7


def _words(n, seed):
    """Random int64 words with the edge values in front."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randint(-(2**63), 2**63 - 1, (n,), generator=g, dtype=torch.long)
    edge = torch.tensor(EDGE[:n], dtype=torch.long)
    w[: edge.numel()] = edge
    return w


def _same(cpu, gpu, what):
    got = gpu.cpu()
    assert got.shape == cpu.shape, what
    bad = (got != cpu).nonzero()
    assert bad.numel() == 0, f"{what}: {bad.shape[0]} words differ, first at {bad[0].tolist()}"


# --- everywhere: the device argument -----------------------------------------------------

def test_check_device_cpu():
    assert check_device("cpu") == torch.device("cpu")
    assert check_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("bad", ["tpu", "gpu0", 3.5, "meta"])
def test_check_device_malformed_names_argument(bad):
    with pytest.raises(ValueError, match="device"):
        check_device(bad)


@pytest.mark.skipif(CUDA, reason="a usable GPU is present")
def test_launch_cuda_without_cuda_raises():
    import pgkernels

    with pytest.raises(ValueError, match="device='cuda'"):
        pgkernels.launch(lambda: 1, world_size=2, device="cuda")


@pytest.mark.skipif(CUDA, reason="a usable GPU is present")
def test_party_cli_device_cuda_without_cuda_errors(capsys):
    from pgkernels import party

    with pytest.raises(SystemExit):
        party.main(["--world-size", "2", "--rendezvous", "file:///nonexistent", "--rank", "0",
                    "--device", "cuda", "--run", "x:y"])
    assert "--device" in capsys.readouterr().err


def test_cuda_kernels_cover_every_tensor_op():
    """Built with CUDA, every op with tensor inputs has a CUDA kernel (none without)."""
    tensor_ops = ["prg_fill_", "bitslice", "unbitslice", "ring_matmul_nt", "ring_syr2k", "cmp_open1",
                  "cmp_start", "cmp_step", "cmp_finish", "cmp_dealer_"]
    ops.load()
    has = [torch._C._dispatch_has_kernel_for_dispatch_key(f"pgkernels::{op}", "CUDA") for op in tensor_ops]
    assert all(has) or not any(has), dict(zip(tensor_ops, has))
    assert ops.cuda_built() == all(has)


# --- on a GPU: bit-identical kernels --------------------------------------------------------

@cuda
@pytest.mark.parametrize("nwords", [0, 1, 2, 3, 1001, BIG + 1])
@pytest.mark.parametrize("nonce,first", [(0, 0), (7, 3), (2**63 - 1, -1), (-5, -(2**63))])
def test_prg_gpu_matches_cpu(nwords, nonce, first):
    key = torch.arange(16, dtype=torch.uint8) * 17
    cpu = torch.empty(nwords, dtype=torch.long)
    ops.prg_fill_(cpu, key, nonce, first)
    gpu = torch.empty(nwords, dtype=torch.long, device="cuda")
    ops.prg_fill_(gpu, key, nonce, first)
    _same(cpu, gpu, "prg")
    gpu2 = torch.empty(nwords, dtype=torch.long, device="cuda")
    ops.prg_fill_(gpu2, key.cuda(), nonce, first)  # a key on the GPU works too
    _same(cpu, gpu2, "prg (key on the GPU)")


@cuda
@pytest.mark.parametrize("n", [0] + SIZES + [BIG])
@pytest.mark.parametrize("k", [1, 5, 63, 64])
def test_bitslice_gpu_matches_cpu(n, k):
    v = _words(n, n + k)
    planes = ops.bitslice(v, k)
    _same(planes, ops.bitslice(v.cuda(), k), "bitslice")
    _same(ops.unbitslice(planes, n, k), ops.unbitslice(planes.cuda(), n, k), "unbitslice")


@cuda
@pytest.mark.parametrize("m,p,k", [(0, 3, 4), (3, 0, 4), (2, 3, 0), (1, 1, 1), (5, 7, 33), (17, 33, 1000),
                                   (50, 50, 100_000), (130, 70, 257), (64, 10, 2**20)])
def test_ring_products_gpu_match_cpu(m, p, k):
    a = _words(m * k, 1).view(m, k)
    b = _words(p * k, 2).view(p, k)
    _same(ops.ring_matmul_nt(a, b), ops.ring_matmul_nt(a.cuda(), b.cuda()), "ring_matmul_nt")
    b2 = _words(m * k, 3).view(m, k)
    _same(ops.ring_syr2k(a), ops.ring_syr2k(a.cuda()), "ring_syr2k(a)")
    _same(ops.ring_syr2k(a, b2), ops.ring_syr2k(a.cuda(), b2.cuda()), "ring_syr2k(a, b)")
    if m > 1 and k > 1:  # strided views are copied first, as on the CPU
        _same(ops.ring_matmul_nt(a[:, ::2], b[:, ::2]), ops.ring_matmul_nt(a.cuda()[:, ::2], b.cuda()[:, ::2]),
              "ring_matmul_nt (strided)")


SPECS = [  # (k, mode, payloads, self_sign)
    (64, ops.CMP_LT, 0, 0), (64, ops.CMP_LT, 1, 1), (64, ops.CMP_LT, 2, -1), (64, ops.CMP_EQ, 1, 1),
    (64, ops.CMP_EQ, 0, 0), (2, ops.CMP_LT, 0, 0), (3, ops.CMP_EQ, 2, 0), (20, ops.CMP_LT, 3, 0),
    (33, ops.CMP_EQ, 0, 0), (64, ops.CMP_MUX, 1, 0), (64, ops.CMP_MUX, 3, 0),
]


def _rounds(n, k, mode, P, ss, parties, device, seed):
    """Every round of one comparison on `device`, from the same words; returns all outputs (CPU)."""
    L = ops.cmp_layout(n, k, mode, P, ss)
    mats = [_words(L.total, seed + p).to(device) for p in range(parties)]
    corr = torch.empty(L.corrected, dtype=torch.long, device=device)
    ops.cmp_dealer_(corr, mats, n, k, mode, P, ss)
    mat = mats[0].clone()
    mat[L.stream:] = corr
    outs = [corr]
    for rank0 in (True, False):
        x = _words(n, seed + 10).to(device)
        v = _words(P * n, seed + 11).to(device)
        o1, z1 = ops.cmp_open1(x, v, mat, k, mode, P, rank0, ss)
        outs += [o1, z1]
        if mode != ops.CMP_MUX:
            c = _words(n, seed + 12).to(device)
            state, buf = ops.cmp_start(c, mat, k, mode, P, rank0, not rank0, ss)
            outs += [state.clone(), buf]
            for level in range(L.levels):
                opened = _words(L.open[level], seed + 20 + level).to(device)
                buf = ops.cmp_step(opened, mat, state, n, k, mode, P, rank0, level, ss)
                outs += [state.clone(), buf]
        z = _words(L.W, seed + 13).to(device)
        e = _words(P * n, seed + 14).to(device)
        outs.append(ops.cmp_finish(z, mat, v, e, n, k, mode, P, rank0, ss))
    return [t.cpu() for t in outs]


@cuda
@pytest.mark.parametrize("parties", [2, 3])
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"k{s[0]}-m{s[1]}-P{s[2]}-s{s[3]}")
def test_compare_rounds_gpu_match_cpu(spec, n, parties):
    k, mode, P, ss = spec
    cpu = _rounds(n, k, mode, P, ss, parties, "cpu", 100 * n + parties)
    gpu = _rounds(n, k, mode, P, ss, parties, "cuda", 100 * n + parties)
    assert len(cpu) == len(gpu)
    for i, (a, b) in enumerate(zip(cpu, gpu)):
        _same(a, b, f"output {i}")


@cuda
@pytest.mark.parametrize("spec", [(64, ops.CMP_LT, 0, 0), (64, ops.CMP_LT, 1, 1)], ids=["ltz", "relu"])
def test_compare_rounds_gpu_match_cpu_1e7(spec):
    k, mode, P, ss = spec
    cpu = _rounds(BIG, k, mode, P, ss, 2, "cpu", 7)
    gpu = _rounds(BIG, k, mode, P, ss, 2, "cuda", 7)
    for i, (a, b) in enumerate(zip(cpu, gpu)):
        _same(a, b, f"output {i}")


@cuda
def test_cuda_ops_refuse_mixed_devices():
    L = ops.cmp_layout(10, 64, ops.CMP_LT, 0, 0)
    with pytest.raises(RuntimeError, match="mat must be on"):
        ops.cmp_open1(torch.zeros(10, dtype=torch.long, device="cuda"), torch.empty(0, dtype=torch.long),
                      torch.zeros(L.total, dtype=torch.long), 64, ops.CMP_LT, 0, True)


# --- on a GPU: sessions ---------------------------------------------------------------------

def _session_ops(n):
    import crypten

    import pgkernels
    from pgkernels import decode

    g = torch.Generator().manual_seed(5)
    x = torch.round(torch.randn(n, generator=g, dtype=torch.float64) * 10 * 2**16) / 2**16
    x[:4] = torch.tensor([0.0, -0.0, 2**-16, -(2**-16)])
    X = torch.round(torch.randn(6, 40, generator=g, dtype=torch.float64) * 2**12) / 2**16
    ex = crypten.cryptensor(x, device="cuda")
    eX = crypten.cryptensor(X, device="cuda")
    assert ex.is_cuda and eX.is_cuda
    out = {}
    out["ltz"] = bool((decode(pgkernels.ltz(ex)).cpu() == (x < 0).double()).all())
    out["relu"] = float((decode(pgkernels.relu(ex)).cpu() - x.clamp(min=0)).abs().max())
    from pgkernels.protocols.linalg import gram

    out["gram"] = float((decode(gram(eX)).cpu() - X @ X.T).abs().max())
    med = pgkernels.median(eX, dim=0, lower=True)
    out["median"] = float((decode(med).cpu() - torch.quantile(X, 0.5, dim=0, interpolation="lower")).abs().max())
    return out


@cuda
@pytest.mark.parametrize("world_size", [2, 3])
def test_cuda_session_end_to_end(world_size):
    import pgkernels

    res = pgkernels.launch(_session_ops, world_size=world_size, args=(5000,), device="cuda", timeout=600)
    for r in res:
        assert r["ltz"]
        assert r["relu"] <= 2**-16
        assert r["gram"] <= 1e-3
        assert r["median"] == 0


def test_udiv_int64_matches_numpy():
    """The GPU's unsigned division (int64 arithmetic) against the CPU's numpy uint64 one."""
    from pgkernels.runtime.dealer import _udiv_int64, udiv

    t = _words(100_000, 9)
    t[10:14] = torch.tensor([-2, 2**63 - 2, 3, -(2**63) + 1])
    for D in (1, 2, 3, 7, 2**16, 2**16 + 1, 10**9 + 7, 2**32, 2**61 + 3, 2**62):
        assert torch.equal(udiv(t, D), _udiv_int64(t, D)), D
    with pytest.raises(ValueError, match="divisor"):
        _udiv_int64(t, 2**62 + 1)
