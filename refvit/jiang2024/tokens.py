"""The distinct non-zero tokens of a batch, and a basis of their span (docs/math.md §7.1, (8.2)).

Every GD update of W_Q, W_K and W_V lies in the span of the training tokens, so the span trainer
(``refvit.jiang2024.span``), the decomposition (``refvit.jiang2024.decompose``) and the coefficient tracker (``refvit.jiang2024.tracking``) all
index their coefficients by the *unique non-zero* tokens found here.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.linalg
import scipy.sparse


class TokenSet(NamedTuple):
    """The distinct non-zero tokens of a batch X (n, M, d) (docs/math.md §7.1); from ``all_tokens``, its non-zero
    tokens position by position, repeats not merged (then "unique" below means "non-zero").

    U: (n_u, d) unique non-zero tokens, in order of first occurrence (row-major over (i, l)).
    index: (n, M) int, X[i, l] = U[index[i, l]]; -1 marks a zero token.
    counts: (n_u,) occurrences of each unique token.
    Et: sparse (n_u, n·M) 0/1 matrix Eᵀ: Eᵀ D sums the rows of repeated tokens (zero tokens left out).
    first: (n_u,) int, flat position (i·M + l) of each unique token's first occurrence.
    repeated: ((u, positions), ...) for each token u that occurs more than once, its flat positions in increasing
        order; empty when more than ``REPEATED_MAX`` tokens repeat (``scatter`` then multiplies by Eᵀ).
    """
    U: np.ndarray
    index: np.ndarray
    counts: np.ndarray
    Et: scipy.sparse.csr_matrix
    first: np.ndarray
    repeated: tuple

    @property
    def n_unique(self) -> int:
        return self.U.shape[0]

    def scatter(self, D: np.ndarray) -> np.ndarray:
        """Eᵀ D: per-token rows D (n, M, ...) summed over each unique token's occurrences -> (n_u, ...).

        docs/math.md (7.3), (8.5).
        """
        flat = D.reshape(self.index.size, -1)
        if self.first is None:
            return np.asarray(self.Et @ flat).reshape((self.n_unique,) + D.shape[2:])
        # Few repeated tokens (μ±): gather each token's first row, then add the rows of each repeated token one
        # after the other in order of position (a running sum: np.add.reduce may sum pairwise), as the product with
        # Eᵀ (CSR) does. Same bits (a -0.0 may stay -0.0), without the sparse-matrix overhead.
        out = flat[self.first]
        for u, pos in self.repeated:
            out[u] = np.add.accumulate(flat[pos], axis=0)[-1]
        return out.reshape((self.n_unique,) + D.shape[2:])

    def gather(self, V: np.ndarray) -> np.ndarray:
        """E V (docs/math.md (8.4)): rows V (n_u, ...) back to every token position -> (n, M, ...), 0 at zero tokens."""
        out = V[np.maximum(self.index, 0)]
        if self.Et.nnz < self.index.size:              # some zero tokens: their projections are exactly 0
            out[self.index < 0] = 0.0
        return out


REPEATED_MAX = 16   # up to this many repeated tokens, ``scatter`` sums them row by row instead of using Eᵀ


# odd 64-bit multipliers for an exact integer row hash (wrapping arithmetic, so the summation order is irrelevant)
def _row_hash(flat: np.ndarray) -> np.ndarray:
    d = flat.shape[1]
    mult = (np.arange(1, d + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)) | np.uint64(1)
    return np.einsum("ij,j->i", flat.view(np.uint64), mult)


def unique_tokens(X: np.ndarray) -> TokenSet:
    """Deduplicate the tokens of X (n, M, d) exactly (equal rows) and drop the all-zero ones (docs/math.md §7.1).

    Rows are grouped by an exact integer hash of their bits and every group with more than one member is then
    compared entry by entry; if a hash collision ever merged different rows, an exact sort of the rows is used
    instead. Either way two tokens are merged only if they are equal.
    """
    n, M, d = X.shape
    rows, nonzero = _nonzero_rows(X, "there is no token span to train in")
    _, first, inverse = np.unique(_row_hash(rows), return_index=True, return_inverse=True)
    inverse = inverse.ravel()
    shared = np.flatnonzero(np.bincount(inverse)[inverse] > 1)
    if shared.size and not np.all(rows[shared] == rows[first[inverse[shared]]]):
        # a hash collision between different rows (never seen; ~2^-64): fall back to an exact sort of the rows
        _, first, inverse = np.unique(rows.view(np.dtype((np.void, d * 8))).ravel(), return_index=True,
                                      return_inverse=True)
        inverse = inverse.ravel()
    # renumber the unique tokens by first occurrence so that, e.g., U[0] is the signal token of sample 0
    rank_of = np.empty(first.size, dtype=np.int64)
    rank_of[np.argsort(first, kind="stable")] = np.arange(first.size)
    inverse = rank_of[inverse]
    U = rows[np.sort(first)]
    index, Et = _positions(nonzero, inverse, U.shape[0], (n, M))
    counts = np.bincount(inverse, minlength=U.shape[0])
    shared_tokens = np.flatnonzero(counts > 1)
    first = repeated = None
    if shared_tokens.size <= REPEATED_MAX:
        first = nonzero[np.unique(inverse, return_index=True)[1]]   # position of each token's first occurrence
        repeated = tuple((int(u), nonzero[inverse == u]) for u in shared_tokens)
    return TokenSet(U, index, counts, Et, first, repeated)


def all_tokens(X: np.ndarray) -> TokenSet:
    """Every non-zero position of X (n, M, d) as a token of its own, repeated ones included: no search for repeats.
    U holds X's non-zero rows in position order (a view of X when no row is zero), index numbers them (-1 at zero
    tokens, as in ``unique_tokens``). For a single pass over a batch (the test loss at the end of training), where
    looking for repeated rows costs more than the rows it would save."""
    rows, nonzero = _nonzero_rows(X, "there is no token to evaluate")
    index, Et = _positions(nonzero, np.arange(nonzero.size), nonzero.size, X.shape[:2])
    return TokenSet(rows, index, np.ones(nonzero.size, dtype=np.int64), Et, nonzero, ())


def _nonzero_rows(X: np.ndarray, nothing: str) -> tuple[np.ndarray, np.ndarray]:
    """(rows, nonzero): the non-zero tokens of X (n, M, d) as float64 rows in position order (a view of X when no
    token is zero) and their flat positions i·M + l. Every token zero is a ValueError that says ``nothing``."""
    n, M, d = X.shape
    flat = np.ascontiguousarray(X.reshape(n * M, d), dtype=np.float64)
    nonzero = np.flatnonzero(np.any(flat != 0.0, axis=1))
    if nonzero.size == 0:
        raise ValueError(f"every token of X is zero: {nothing}; check the data")
    return (flat if nonzero.size == flat.shape[0] else flat[nonzero]), nonzero


def _positions(nonzero: np.ndarray, token: np.ndarray, n_tokens: int, shape: tuple) -> tuple:
    """(index (n, M), Eᵀ (n_tokens, n·M) sparse 0/1) when position nonzero[k] holds token[k] and every other
    position of ``shape`` (n, M) a zero token (-1 in index, no entry in Eᵀ)."""
    index = np.full(shape[0] * shape[1], -1, dtype=np.int64)
    index[nonzero] = token
    Et = scipy.sparse.csr_matrix((np.ones(nonzero.size), (token, nonzero)), shape=(n_tokens, index.size))
    return index.reshape(shape), Et


def orthonormal_basis(U: np.ndarray) -> np.ndarray:
    """An orthonormal basis (d, r) of the row space of U (n_u, d), r = numerical rank, by a column-pivoted QR of Uᵀ.

    The "orthonormal" basis of docs/math.md (8.2). Rank tolerance as ``numpy.linalg.matrix_rank``:
    |R_kk| > |R_00|·max(d, n_u)·ε, on unit-norm tokens so that weak tokens (‖x‖ ≈ 6) are not mistaken for rounding
    noise next to strong ones (‖ξ‖ ≈ 128).
    """
    Un = U / np.linalg.norm(U, axis=1, keepdims=True)
    Qm, R, _ = scipy.linalg.qr(Un.T, mode="economic", pivoting=True)
    diag = np.abs(np.diag(R))
    rank = int(np.sum(diag > diag[0] * max(U.shape) * np.finfo(float).eps))
    return np.ascontiguousarray(Qm[:, :rank])
