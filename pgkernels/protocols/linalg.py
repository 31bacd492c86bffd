"""Distances between secret-shared vectors (rows of a client-update matrix).

``gram(X)`` -- the Gram matrix ``X X^T`` of a shared (m, k) matrix with one
    dealer-masked opening: the dealer gives shares of a random A and of
    ``A A^T``; the parties open ``E = X - A`` (m k words, one round) and compute
    ``E E^T + M + M^T + [A A^T]`` with ``M = E A^T`` locally (two int64
    matrix products at party 0, one elsewhere). CrypTen's ``X.matmul(X.t())``
    opens both operands (2 m k words): this sends half. The product (scale
    2^32) is brought back to 16 fractional bits with CrypTen's truncation
    (local with 2 parties, its wraps protocol with more) and mirrored from its
    upper triangle, so the shared result is exactly symmetric. Reveals nothing.
``pairwise_sq_dist(X)`` -- ``||x_i - x_j||^2 = G_ii + G_jj - 2 G_ij`` from the
    Gram matrix (n, n); same cost. Reveals nothing.
"""

import torch

from ..runtime import comm as _comm
from ..runtime.session import dealer_client
from . import _shares


def _truncate(share, frac):
    """Shares of a scale-2^(2 frac) value as an MPCTensor with scale 2^frac."""
    mpc = _shares.mpc_module()
    t = mpc.MPCTensor.from_shares(share, precision=2 * frac)
    if frac:
        t._tensor.div_(2 ** frac)
    return mpc.MPCTensor.from_shares(t.share, precision=frac)


def gram(X):
    """``X @ X.T`` for a shared 2-D X (m, k): shared (m, m), X's encoding. 1 round, m k words opened."""
    X = _shares.check_mpc(X, "X")
    if X.dim() != 2:
        raise ValueError(f"X must be 2-D (clients x parameters), got shape {tuple(X.size())}")
    m, k = X.size()
    frac = _shares.frac_bits(X.encoder.scale)
    if m == 0 or k == 0:
        return _shares.like_shape(torch.zeros(m, m, dtype=torch.long), X.encoder.scale)
    mat = dealer_client().crypten({"fn": "gram", "size": [m, k]})
    words = mat.words
    A = words[: m * k].view(m, k)  # stream part: ready now
    E = (X.share - A).contiguous()
    _comm.exchange(sum_tensor=E)  # E = X - A, public
    M = E @ A.T  # E A^T + A E^T = M + M^T: one product instead of two
    G = M + M.T
    if _comm.rank() == 0:
        G += E @ E.T
    mat.wait()  # [A A^T] is needed only now: the dealer computed it meanwhile
    G += words[m * k:].view(m, m)
    out = _truncate(G, frac)
    # Truncation rounds G_ij and G_ji independently; mirror the upper triangle so
    # the result is exactly symmetric (equal distances stay exact ties).
    share = out.share
    sym = torch.triu(share) + torch.triu(share, 1).T
    return _shares.like_shape(sym.contiguous(), out.encoder.scale)


def pairwise_sq_dist(X):
    """Squared Euclidean distances between the rows of a shared (n, d) X: shared (n, n).

    ``D_ij = G_ii + G_jj - 2 G_ij`` with ``G = gram(X)`` (1 round). Exact up to
    CrypTen's truncation (about one unit in the last fractional bit, times 4).
    Reveals nothing.
    """
    G = gram(X)
    diag = G.share.diagonal().clone()
    D = diag.view(-1, 1) + diag.view(1, -1) - 2 * G.share
    return _shares.like_shape(D, G.encoder.scale)
