"""The compiled ops on their own: PRG stream, bit slicing, layouts, argument checks."""

import dataclasses

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


# -- the typed wrappers (pgkernels.ops) and their fake kernels ----------------------

def _schema_names():
    import re
    from pathlib import Path

    src = (Path(__file__).resolve().parents[1] / "csrc" / "ops.cpp").read_text()
    return sorted(set(re.findall(r'm\.def\("(\w+)\(', src)))


def test_one_typed_wrapper_per_op():
    from pgkernels import ops as K

    names = _schema_names()
    assert len(names) >= 13
    for name in names:
        assert name in K.__all__ and callable(getattr(K, name)), f"pgkernels.ops has no wrapper for {name}"
        assert getattr(K, name).__doc__, name
        assert hasattr(torch.ops.pgkernels, name)


@pytest.mark.parametrize("n", [1, 63, 64, 65, 1000])
@pytest.mark.parametrize("spec", [(64, 0, 0, 0), (64, 0, 3, -1), (64, 1, 2, 1), (9, 0, 1, 0), (5, 1, 0, 0),
                                  (64, 2, 2, 0)])
def test_layout_is_decoded_once_into_named_fields(n, spec):
    from pgkernels import ops as K

    k, mode, payloads, self_sign = spec
    raw = torch.ops.pgkernels.cmp_layout(n, k, mode, payloads, self_sign)
    lay = K.cmp_layout(n, k, mode, payloads, self_sign)
    assert isinstance(lay, K.CmpLayout)
    assert [lay.stream, lay.total, lay.levels, lay.W, lay.open1, lay.state] == raw[:6]
    assert list(lay.open) == raw[6:] and len(lay.open) == lay.levels + 1
    assert lay.W == (n + 63) // 64 and lay.open[-1] == lay.W and lay.corrected == lay.total - lay.stream
    with pytest.raises(dataclasses.FrozenInstanceError):
        lay.total = 0


def _rand(shape, g):
    return torch.randint(-(2**63), 2**63 - 1, shape, generator=g, dtype=torch.long)


def _cmp_cases():
    """(name, op, args) for every comparison op on every mode, payload count and width."""
    from pgkernels import ops as K

    lib = K.load()
    g = torch.Generator().manual_seed(11)
    cases = []
    for n in (1, 100):
        for k, mode, P, ss in ((64, 0, 0, 0), (64, 0, 2, -1), (64, 1, 1, 1), (12, 0, 1, 0), (7, 1, 0, 0),
                               (64, 2, 2, 0)):
            tag = f"n{n}-k{k}-mode{mode}-P{P}-s{ss}"
            lay = K.cmp_layout(n, k, mode, P, ss)
            x, mat, v = _rand((n,), g), _rand((lay.total,), g), _rand((P * n,), g)
            cases.append((f"cmp_open1-{tag}", lib.cmp_open1, (x, v, mat, k, mode, P, True, ss)))
            if mode != K.CMP_MUX:
                cases.append((f"cmp_start-{tag}", lib.cmp_start, (x, mat, k, mode, P, False, True, ss)))
                for level in range(lay.levels):
                    cases.append((f"cmp_step{level}-{tag}", lib.cmp_step,
                                  (_rand((lay.open[level],), g), mat, _rand((lay.state,), g), n, k, mode, P,
                                   level == 0, level, ss)))
            cases.append((f"cmp_finish-{tag}", lib.cmp_finish,
                          (_rand((lay.W,), g), mat, v, _rand((P * n,), g), n, k, mode, P, True, ss)))
            mats = [_rand((lay.total,), g) for _ in range(3)]
            cases.append((f"cmp_dealer_-{tag}", lib.cmp_dealer_,
                          (torch.empty(lay.corrected, dtype=torch.long), mats, n, k, mode, P, ss)))
    return cases


def _other_cases():
    from pgkernels import ops as K

    lib = K.load()
    g = torch.Generator().manual_seed(12)
    x = _rand((130,), g)
    a, b = _rand((5, 7), g), _rand((4, 7), g)
    return [
        ("prg_fill_", lib.prg_fill_, (torch.empty(9, dtype=torch.long), _key(2), 3, 1)),
        ("bitslice", lib.bitslice, (x, 64)),
        ("bitslice-k5", lib.bitslice, (x, 5)),
        ("unbitslice", lib.unbitslice, (K.bitslice(x, 9), 130, 9)),
        ("ring_matmul_nt", lib.ring_matmul_nt, (a, b)),
        ("ring_matmul_nt-strided", lib.ring_matmul_nt, (a.T.contiguous().T[:, :3], b[:, :3])),
        ("ring_syr2k", lib.ring_syr2k, (a,)),
        ("ring_syr2k-b", lib.ring_syr2k, (a, a * 3 + 1)),
    ]


def _fss_cases():
    from pgkernels import ops as K

    lib = K.load()
    g = torch.Generator().manual_seed(13)
    cases = []
    for n, bits in ((1, 1), (37, 32), (9, 64)):
        a, x = _rand((n,), g), _rand((n,), g)
        s0, s1 = _rand((2 * n,), g), _rand((2 * n,), g)
        cw = K.dcf_gen(a, None, None, s0, s1, bits)
        cases.append((f"dcf_gen-n{n}-b{bits}", lib.dcf_gen, (a, None, None, s0, s1, bits)))
        cases.append((f"dcf_gen-beta-n{n}-b{bits}", lib.dcf_gen, (a, _rand((n,), g), _rand((n,), g), s0, s1, bits)))
        cases.append((f"dcf_eval-n{n}-b{bits}", lib.dcf_eval, (x, s1, cw, bits, 1)))
        k = max(bits, 2)
        cwl = torch.empty(n * K.dcf_cw_words(k - 1), dtype=torch.long)
        cases.append((f"fss_ltz_gen_-n{n}-k{k}", lib.fss_ltz_gen_, (cwl, a, s0, s1, k)))
        cases.append((f"fss_ltz_eval-n{n}-k{k}", lib.fss_ltz_eval, (x, s0, cwl, k, 0)))
    return cases


ALL_TESTS = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")


@pytest.mark.parametrize("case", _cmp_cases() + _other_cases() + _fss_cases(), ids=lambda c: c[0])
def test_opcheck(case):
    """Every test of opcheck on every op with tensor inputs, the mutating ones
    (prg_fill_, cmp_step, cmp_dealer_) included: their schemas name the mode
    argument cmp_mode, so torch's auto_functionalized (impl(mode, ...)) runs them."""
    name, op, args = case
    torch.library.opcheck(op, args, test_utils=ALL_TESTS)


def test_opcheck_ops_without_tensor_inputs():
    """The int-only ops: cmp_layout and aesni_available run as they are under a
    fake mode (CompositeImplicitAutograd); sorting_network has a fake kernel
    (CompositeExplicitAutograd), full and pruned to some outputs."""
    from pgkernels import ops as K

    lib = K.load()
    torch.library.opcheck(lib.cmp_layout, (100, 64, 0, 2, -1), test_utils=ALL_TESTS)
    torch.library.opcheck(lib.aesni_available, (), test_utils=ALL_TESTS)
    torch.library.opcheck(lib.dcf_isa, (), test_utils=ALL_TESTS)
    torch.library.opcheck(lib.dcf_cw_words, (63,), test_utils=ALL_TESTS)
    for args in ((9, [4]), (9, []), (1, []), (0, []), (33, [0, 32])):
        torch.library.opcheck(lib.sorting_network, args, test_utils=ALL_TESTS)


def test_sorting_network_fake_checks_like_the_kernel():
    from torch._subclasses.fake_tensor import FakeTensorMode

    from pgkernels import ops as K

    lib = K.load()
    with FakeTensorMode():
        assert lib.sorting_network(9, [4]).shape == K.sorting_network(9, [4]).shape
        with pytest.raises(RuntimeError, match="out of range"):
            lib.sorting_network(9, [9])


def test_fake_kernels_trace_the_comparison_rounds():
    """One comparison's local rounds (open1, start, steps, finish) under a fake
    mode: the sizes the fake kernels give are the real kernels' sizes."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from pgkernels import ops as K

    n, k, mode, P, ss = 300, 64, K.CMP_LT, 2, -1
    lay = K.cmp_layout(n, k, mode, P, ss)
    g = torch.Generator().manual_seed(3)
    real = [_rand((n,), g), _rand((P * n,), g), _rand((lay.total,), g)]

    def rounds(x, v, mat):
        open1, z = K.cmp_open1(x, v, mat, k, mode, P, True, ss)
        state, buf = K.cmp_start(open1[:n].clone(), mat, k, mode, P, True, True, ss)
        sizes = [open1.shape, z.shape, state.shape, buf.shape]
        for level in range(lay.levels):
            buf = K.cmp_step(buf, mat, state, n, k, mode, P, True, level, ss)
            sizes.append(buf.shape)
        out = K.cmp_finish(buf, mat, v, torch.cat([open1[:n], open1[n:]]), n, k, mode, P, True, ss)
        return sizes + [out.shape]

    want = rounds(*real)
    with FakeTensorMode() as fm:
        got = rounds(*[fm.from_tensor(t) for t in real])
    assert got == want
    assert want[0] == (lay.open1,) and want[2] == (lay.state,) and want[-1] == (P * n,)
    assert [s[0] for s in want[3:3 + lay.levels + 1]] == list(lay.open)


@pytest.mark.parametrize("bits", [1, 2, 31, 32, 63, 64])
def test_dcf_shares_add_up_to_the_comparison(bits):
    from pgkernels import ops as K

    g = torch.Generator().manual_seed(bits)
    top = (1 << bits) - 1 if bits < 64 else -1  # as an int64
    alpha = torch.cat([torch.tensor([0, 1, top, top - 1] if bits > 1 else [0, 1, 1, 0]), _rand((60,), g)])
    alpha = alpha & top if bits < 64 else alpha
    n = alpha.numel()
    edges = [torch.zeros(n, dtype=torch.long), alpha - 1, alpha, alpha + 1, torch.full((n,), top)]
    beta, off = _rand((n,), g), _rand((n,), g)
    s0, s1 = _rand((2 * n,), g), _rand((2 * n,), g)
    cw = K.dcf_gen(alpha, beta, off, s0, s1, bits)
    assert cw.numel() == n * K.dcf_cw_words(bits) == n * (3 * bits + 1)
    for x in edges + [_rand((n,), g)]:
        got = K.dcf_eval(x, s0, cw, bits, 0) + K.dcf_eval(x, s1, cw, bits, 1)
        xl, al = (x & top, alpha & top) if bits < 64 else (x, alpha)
        # unsigned comparison of the low bits
        less = (xl ^ (1 << 63) < al ^ (1 << 63)) if bits == 64 else xl < al
        assert torch.equal(got, off + torch.where(less, beta, torch.zeros_like(beta)))


@pytest.mark.parametrize("k", [2, 8, 32, 63, 64])
def test_fss_ltz_exact_on_edges(k):
    from pgkernels import ops as K

    g = torch.Generator().manual_seed(100 + k)
    half = 1 << (k - 1)
    x = torch.cat([torch.tensor([0, 1, -1, -half, half - 1, -half + 1]), _rand((200,), g) >> (64 - k)])
    n = x.numel()
    r = _rand((n,), g)
    r[:6] = 0
    r[6:12] = -x[:6]
    s0, s1 = _rand((2 * n,), g), _rand((2 * n,), g)
    cw = torch.empty(n * K.dcf_cw_words(k - 1), dtype=torch.long)
    K.fss_ltz_gen_(cw, r, s0, s1, k)
    c = x + r  # high bits above k are ignored
    got = K.fss_ltz_eval(c, s0, cw, k, 0) + K.fss_ltz_eval(c, s1, cw, k, 1)
    assert torch.equal(got, (x < 0).long())
    assert K.dcf_isa() in K.DCF_ISAS


def test_fss_ops_check_arguments():
    from pgkernels import ops as K

    x = torch.zeros(4, dtype=torch.long)
    with pytest.raises(RuntimeError, match="bits must be in"):
        K.dcf_gen(x, None, None, torch.zeros(8, dtype=torch.long), torch.zeros(8, dtype=torch.long), 65)
    with pytest.raises(RuntimeError, match="seed0"):
        K.dcf_gen(x, None, None, torch.zeros(7, dtype=torch.long), torch.zeros(8, dtype=torch.long), 8)
    with pytest.raises(RuntimeError, match="party must be 0 or 1"):
        K.dcf_eval(x, torch.zeros(8, dtype=torch.long), torch.zeros(4 * 25, dtype=torch.long), 8, 2)
    with pytest.raises(RuntimeError, match="cw"):
        K.fss_ltz_eval(x, torch.zeros(8, dtype=torch.long), torch.zeros(3, dtype=torch.long), 64, 0)
    with pytest.raises(RuntimeError, match="k must be in"):
        K.fss_ltz_eval(x, torch.zeros(8, dtype=torch.long), torch.zeros(3, dtype=torch.long), 1, 0)
