"""The compiled ops on their own: PRG stream, bit slicing, layouts, argument checks."""

import pytest
import torch

import pgkernels  # noqa: F401
import pgkernels._C  # noqa: F401

ops = torch.ops.pgkernels


def _key(seed):
    return torch.arange(16, dtype=torch.uint8) * seed


def test_prg_is_deterministic_and_random_access():
    a = torch.empty(1000, dtype=torch.long)
    b = torch.empty(1000, dtype=torch.long)
    ops.prg_fill_(a, _key(3), 7, 0)
    ops.prg_fill_(b, _key(3), 7, 0)
    assert torch.equal(a, b)
    tail = torch.empty(990, dtype=torch.long)
    ops.prg_fill_(tail, _key(3), 7, 5)  # 16-byte blocks: block 5 starts at word 10
    assert torch.equal(tail, a[10:])
    ops.prg_fill_(b, _key(3), 8, 0)
    assert not torch.equal(a, b)
    ops.prg_fill_(b, _key(4), 7, 0)
    assert not torch.equal(a, b)
    # roughly uniform bits
    bits = torch.stack([(a >> i) & 1 for i in range(64)]).float().mean()
    assert 0.45 < float(bits) < 0.55


def test_prg_known_answer():
    # AES-128(key = 0, LE64(0) || LE64(0)) = 66e94bd4ef8a2c3b884cfa59ca342b2e (FIPS-197 zero vector)
    out = torch.empty(2, dtype=torch.long)
    ops.prg_fill_(out, torch.zeros(16, dtype=torch.uint8), 0, 0)
    got = out.numpy().tobytes().hex()
    assert got == "66e94bd4ef8a2c3b884cfa59ca342b2e"


@pytest.mark.parametrize("n", [0, 1, 63, 64, 65, 1000])
@pytest.mark.parametrize("k", [1, 7, 64])
def test_bitslice_round_trip(n, k):
    g = torch.Generator().manual_seed(n * 100 + k)
    x = torch.randint(-(2**63), 2**63 - 1, (n,), generator=g, dtype=torch.long)
    planes = ops.bitslice(x, k)
    back = ops.unbitslice(planes, n, k)
    mask = -1 if k == 64 else (1 << k) - 1
    assert torch.equal(back, x & mask)
    if n > 5:
        W = (n + 63) // 64
        assert int((planes[(k - 1) * W + 0] >> 5) & 1) == int((x[5] >> (k - 1)) & 1)


def test_layout_and_checks():
    lay = ops.cmp_layout(1000, 64, 0, False)
    stream_words, total, levels = lay[:3]
    assert levels == 4 and 0 < stream_words < total
    with pytest.raises(RuntimeError, match=r"bits must be in \[2, 64\]"):
        ops.cmp_layout(10, 65, 0, False)
    with pytest.raises(RuntimeError, match="unknown mode"):
        ops.cmp_layout(10, 64, 7, False)
    with pytest.raises(RuntimeError, match="must be an int64 tensor"):
        ops.cmp_open1(torch.zeros(4, dtype=torch.int32), torch.zeros(0, dtype=torch.long),
                      torch.zeros(total, dtype=torch.long), 64, 0, False, True)
    with pytest.raises(RuntimeError, match="mat has"):
        ops.cmp_open1(torch.zeros(1000, dtype=torch.long), torch.zeros(0, dtype=torch.long),
                      torch.zeros(10, dtype=torch.long), 64, 0, False, True)
    with pytest.raises(RuntimeError, match="key must be a contiguous uint8 tensor of 16 bytes"):
        ops.prg_fill_(torch.zeros(4, dtype=torch.long), torch.zeros(8, dtype=torch.uint8), 0, 0)


def test_opcheck_schemas():
    x = torch.randint(-(2**40), 2**40, (100,), dtype=torch.long)
    torch.library.opcheck(ops.bitslice, (x, 64), test_utils=("test_schema",))
    torch.library.opcheck(ops.prg_fill_, (torch.empty(8, dtype=torch.long), _key(1), 1, 0),
                          test_utils=("test_schema",))


def test_single_process_protocol_simulation():
    """Drive every round of ltz for 3 simulated parties through the torch ops."""
    n, k, parties = 300, 64, 3
    g = torch.Generator().manual_seed(5)
    x = torch.randint(-(2**63), 2**63 - 1, (n,), generator=g, dtype=torch.long)
    lay = ops.cmp_layout(n, k, 0, False)
    stream_words, total, levels = lay[:3]
    keys = [_key(i + 1) for i in range(parties)]
    mats = []
    for key in keys:
        m = torch.empty(total, dtype=torch.long)
        ops.prg_fill_(m, key, 1, 0)
        mats.append(m)
    corr = torch.empty(total - stream_words, dtype=torch.long)
    ops.cmp_dealer_(corr, mats, n, k, 0, False)
    mats[0][stream_words:] = corr
    shares = [torch.randint(-(2**63), 2**63 - 1, (n,), generator=g, dtype=torch.long) for _ in range(parties - 1)]
    shares = [x - sum(shares)] + shares
    empty = torch.zeros(0, dtype=torch.long)
    c = sum(ops.cmp_open1(s, empty, m, k, 0, False, i == 0)[0] for i, (s, m) in enumerate(zip(shares, mats)))
    states, opened = [], 0
    for i, m in enumerate(mats):
        st, o = ops.cmp_start(c, m, k, 0, False, i == 0, True)
        states.append(st)
        opened = o if i == 0 else opened ^ o
    for level in range(levels):
        nxt = None
        for i, m in enumerate(mats):
            o = ops.cmp_step(opened, m, states[i], n, k, 0, False, i == 0, level)
            nxt = o if nxt is None else nxt ^ o
        opened = nxt
    out = sum(ops.cmp_finish(opened, m, empty, empty, n, k, 0, False, i == 0) for i, m in enumerate(mats))
    assert torch.equal(out, (x < 0).long())


# -- ring products: any strides (expanded rows, column views, transposes) -------

def _ring_ref(a, b):
    import numpy as np

    A = a.contiguous().numpy().view(np.uint64)
    B = b.contiguous().numpy().view(np.uint64)
    return torch.from_numpy((A @ B.T).view(np.int64))  # numpy's uint64 matmul wraps mod 2^64


def _strided_cases():
    g = torch.Generator().manual_seed(5)
    big = torch.randint(-2**63, 2**63 - 1, (9, 12), generator=g, dtype=torch.long)
    row = torch.randint(-2**63, 2**63 - 1, (1, 7), generator=g, dtype=torch.long)
    return {
        "expanded-rows": row.expand(6, 7),                # stride (0, 1): used to read past the row
        "column-view": big[:, 3:4],                       # stride (12, 1) with one column
        "column-slice": big[:, 2:9],                      # rows not contiguous with each other
        "transpose": big.T,                               # stride (1, 12)
        "every-other-row": big[::2],
        "dense": big,
        "empty-rows": big[:0],
        "empty-cols": big[:, :0],
    }


@pytest.mark.parametrize("name", list(_strided_cases()))
def test_ring_products_on_any_strides(name):
    a = _strided_cases()[name]
    assert torch.equal(ops.ring_matmul_nt(a, a), _ring_ref(a, a))
    assert torch.equal(ops.ring_syr2k(a), _ring_ref(a, a))
    b = torch.flip(a.contiguous(), [0]).expand_as(a) if a.numel() else a
    b = b * 3 + 1
    assert torch.equal(ops.ring_syr2k(a, b), _ring_ref(a, b) + _ring_ref(b, a))
    other = torch.arange(a.shape[1] + 1, dtype=torch.long).view(1, -1).expand(5, -1)[:, : a.shape[1]]
    assert torch.equal(ops.ring_matmul_nt(a, other), _ring_ref(a, other))


def test_ring_products_check_arguments():
    with pytest.raises(RuntimeError, match="int64"):
        ops.ring_matmul_nt(torch.zeros(2, 2), torch.zeros(2, 2))
    with pytest.raises(RuntimeError, match="2-D"):
        ops.ring_syr2k(torch.zeros(2, dtype=torch.long))
    with pytest.raises(RuntimeError, match="inner dimensions"):
        ops.ring_matmul_nt(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 4, dtype=torch.long))
