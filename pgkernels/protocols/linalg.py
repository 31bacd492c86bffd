"""Distances between secret-shared vectors (rows of a client-update matrix).

``gram(X)`` -- the Gram matrix ``X X^T`` of a shared (m, k) matrix with one
    dealer-masked opening: the dealer gives shares of a random A and of
    ``A A^T``; the parties open ``E = X - A`` (m k words, one round) and add
    ``E E^T + E A_i^T + A_i E^T`` to their share of ``A A^T`` locally, with
    the symmetric ring products of ``csrc/core/ring.h`` (party 0 computes
    ``(E + A_0)(E + A_0)^T - A_0 A_0^T``, the others ``E A_i^T + A_i E^T``;
    each is about one general product's work). CrypTen's ``X.matmul(X.t())``
    opens both operands (2 m k words): this sends half. The product (scale
    2^32) is brought back to 16 fractional bits with CrypTen's truncation
    (local with 2 parties, its wraps protocol with more) and mirrored from its
    upper triangle, so the shared result is exactly symmetric. Reveals nothing.
``cosine_similarity(X, Y=None)`` -- ``cos(x_i, y_j)`` (n, m) of the rows: the
    Gram matrix (or CrypTen's Beaver ``X Y^T``) times the range-robust inverse
    norms of :mod:`pgkernels.protocols.roots`. Reveals nothing.
``pairwise_sq_dist(X)`` -- ``||x_i - x_j||^2 = G_ii + G_jj - 2 G_ij`` from the
    Gram matrix (n, n); same cost. Reveals nothing.
"""

import torch

from .. import ops
from ..runtime import comm as _comm
from ..runtime.session import dealer_client
from . import shares


def _truncate(share, frac):
    """Shares of a scale-2^(2 frac) value as an MPCTensor with scale 2^frac: the
    dealer-assisted division of :mod:`.truncation` (Gram entries and squared
    norms of client updates can be large, where CrypTen's local truncation
    would fail with probability |x| / 2^63)."""
    from .truncation import div_shares

    (out,) = div_shares([share.reshape(-1).contiguous()], [2 ** frac]) if frac else (share.reshape(-1),)
    return shares.like_shape(out.view(share.shape), 2 ** frac)


def ring_matmul_nt(a, b):
    """``a @ b.T`` mod 2^64 for int64 matrices: csrc/core's blocked kernel on the
    CPU (about 1.3x torch's int64 matmul here), csrc/cuda's split-k kernel on a
    GPU (torch has no int64 matmul on CUDA)."""
    return ops.ring_matmul_nt(a, b)


def ring_syr2k(a, b=None):
    """``a @ b.T + b @ a.T`` (or ``a @ a.T``) mod 2^64, computing one triangle:
    half (a quarter with b) of the multiplications of the general products."""
    return ops.ring_syr2k(a, b)


_SCRATCH = {}


def _scratch(name, shape, device=None):
    """A reused int64 buffer: buffers past glibc's 32 MB mmap threshold are
    otherwise fresh pages on every call, and faulting them in costs as much as
    the products (about 20 ms per 40 MB here)."""
    numel = shape[0] * shape[1]
    name = (name, str(device))
    buf = _SCRATCH.get(name)
    if buf is None or buf.numel() < numel:
        buf = _SCRATCH[name] = torch.empty(numel, dtype=torch.long, device=device)
    return buf[:numel].view(shape)


def gram(X):
    """``X @ X.T`` for a shared 2-D X (m, k): shared (m, m), X's encoding. 1 round, m k words opened."""
    X = shares.check_mpc(X, "X")
    if X.dim() != 2:
        raise ValueError(f"X must be 2-D (clients x parameters), got shape {tuple(X.size())}")
    m, k = X.size()
    frac = shares.frac_bits(X.encoder.scale)
    if m == 0 or k == 0:
        return shares.like_shape(torch.zeros(m, m, dtype=torch.long, device=X.device), X.encoder.scale)
    mat = dealer_client().crypten({"fn": "gram", "size": [m, k]})
    words = mat.words
    A = words[: m * k].view(m, k)  # stream part: ready now
    Xs = shares.raw_share(X)
    E = torch.sub(Xs, A, out=_scratch("E", (m, k), Xs.device))
    _comm.exchange(sum_tensor=E)  # E = X - A, public
    if _comm.rank() == 0:
        # E E^T + E A^T + A E^T = (E + A)(E + A)^T - A A^T: two half-work products
        G = ring_syr2k(torch.add(E, A, out=_scratch("E+A", (m, k), Xs.device))) - ring_syr2k(A)
    else:
        G = ring_syr2k(E, A)  # E A^T + A E^T
    mat.wait()  # [A A^T] is needed only now: the dealer computed it meanwhile
    G += words[m * k:].view(m, m)
    out = _truncate(G, frac)
    # Truncation rounds G_ij and G_ji independently; mirror the upper triangle so
    # the result is exactly symmetric (equal distances stay exact ties).
    share = shares.raw_share(out)
    sym = torch.triu(share) + torch.triu(share, 1).T
    return shares.like_shape(sym.contiguous(), out.encoder.scale)


def pairwise_sq_dist(X):
    """Squared Euclidean distances between the rows of a shared (n, d) X: shared (n, n).

    ``D_ij = G_ii + G_jj - 2 G_ij`` with ``G = gram(X)`` (1 round). Exact up to
    CrypTen's truncation (about one unit in the last fractional bit, times 4).
    Reveals nothing.
    """
    G = gram(X)
    Gs = shares.raw_share(G)
    diag = Gs.diagonal().clone()
    D = diag.view(-1, 1) + diag.view(1, -1) - 2 * Gs
    return shares.like_shape(D, G.encoder.scale)


def row_sq_norms(X):
    """Squared L2 norms of the rows of a shared (n, d) X: shared (n,), X's encoding.

    Each square sum is formed exactly at twice X's fractional bits (one dealer
    square pair per element, 1 round, 8 bytes per element; see
    :func:`pgkernels.protocols.validity.square_sums`) and truncated once per
    row, where ``(X * X).sum(1)`` would truncate every product. Reveals nothing.
    """
    from .validity import square_sums

    X = shares.check_mpc(X, "X")
    if X.dim() != 2:
        raise ValueError(f"X must be 2-D (rows x features), got shape {tuple(X.size())}")
    n, d = X.size()
    sq = square_sums(shares.flat_share(X).view(n, d))
    return _truncate(sq, shares.frac_bits(X.encoder.scale))


def _diag(G):
    return shares.like_shape(shares.raw_share(G).diagonal().clone(), G.encoder.scale)


def cosine_similarity(X, Y=None):
    """Cosine similarity of the rows of shared X (n, d) with the rows of Y (m, d)
    (Y=None: with X's own rows): shared (n, m), like sklearn's
    ``cosine_similarity``. A zero row has similarity 0 with everything.

    Protocol: ``X X^T`` by :func:`gram` (1 round; its diagonal gives the squared
    norms) or CrypTen's ``X Y^T`` plus both Gram diagonals (1 round), inverse norms ``2^8 /
    ||x||`` by :func:`pgkernels.protocols.roots.inv_sqrt` (8 rounds; squared
    norms in [2^-16, 2^37)), then two multiplication rounds. Absolute error
    about 1e-3 (16 fractional bits on the inverse norms). Rows with squared norm
    below 2^-12 count as zero rows. Reveals nothing.
    """
    from .roots import inv_sqrt

    X = shares.check_mpc(X, "X")
    if X.dim() != 2:
        raise ValueError(f"X must be 2-D (rows x features), got shape {tuple(X.size())}")
    # squared norms from Gram diagonals: one truncation per norm (a sum of
    # truncated squares would carry d truncation errors), so a zero row's
    # squared norm is within a few units of 2^-16 of 0 and the floor 2^-12
    # makes it exactly a zero row
    if Y is None:
        P = gram(X)
        ax = ay = inv_sqrt(_diag(P), shift=8, floor=-6)
    else:
        Y = shares.check_mpc(Y, "Y")
        if Y.dim() != 2 or Y.size(1) != X.size(1):
            raise ValueError(f"Y must be 2-D with {X.size(1)} columns like X, got shape {tuple(Y.size())}")
        P = X.matmul(Y.t())
        import crypten

        both = inv_sqrt(crypten.cat([_diag(gram(X)), _diag(gram(Y))]), shift=8, floor=-6)
        ax, ay = both[: X.size(0)], both[X.size(0):]
    outer = ax.unsqueeze(1) * ay.unsqueeze(0)  # 2^16 / (||x_i|| ||y_j||)
    return (P * outer).div(65536)
