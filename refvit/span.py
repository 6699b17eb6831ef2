"""Exact training in token coordinates (PAPER §5.5): W(t) = W(0) + P·A(t) for W ∈ {W_Q, W_K, W_V}.

Every GD update of W_Q, W_K and W_V is Xᵀ(…): its left factor lies in the span of the training tokens whether or not
w_O is trained (PAPER §4, §5.5). So the trainer keeps the coefficient matrices A_Q, A_K (r, d_h) and A_V (r, d_v)
and never touches a d-dimensional matrix inside the loop. It is the same trajectory as the dense trainer, not an
approximation: only the rounding differs.

Basis P (d, r), chosen once from the *unique non-zero* training tokens U (n_u, d):
    "tokens"      P = Uᵀ (r = n_u): row u of A belongs to token u (μ₊, μ₋, ξ_i, x_{i,l}), so the coefficients of
                  PAPER §5.2-5.3 are read off directly. Used whenever n_u ≤ d. It stays exact even if the tokens are
                  linearly dependent (the coefficients are then the ones GD accumulates, but no longer the only ones
                  that give W(t); ``refvit.decompose`` says which are identifiable).
    "orthonormal" P = an orthonormal basis of span(U) from a pivoted QR (r = rank ≤ d). Used when n_u > d, where
                  the token basis would cost more than the dense model. Rows of A then name basis vectors, not
                  tokens.
Repeated tokens (μ± occurs once per image of its class) count once; zero tokens (other_tokens="zero") are dropped:
they contribute nothing to any gradient and have no direction to carry a coefficient.

With U_c := U·P (n_u, r) the coordinates of the unique tokens (U_c = UUᵀ, the Gram matrix, in the token basis):
    U·W(t) = U·W(0) + U_c·A(t)                       (n_u, d_h): queries/keys of every unique token
    ∇_W L_S = Σ_i X_iᵀ D_i = Uᵀ·(Eᵀ D) = P·Γ,  Γ = (Eᵀ D) in the token basis, U_cᵀ(Eᵀ D) otherwise,
where D = dQ, dK (or dv w_Oᵀ) are the per-token gradients from the attention core and Eᵀ sums the rows of repeated
tokens. GD on W is A ← A − ηΓ: the state gradient is Γ, **not** Pᵀ∇_W L_S = (PᵀP)Γ (PAPER §5.5, pitfall).
Per step: two (n_u × r)·(r × d_h) products, O(n_u r d_h), against O(N M d d_h) for the dense step.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.linalg
import scipy.sparse

from .model import Cache, Params, attention_core, logistic_loss_derivative, mean_loss

BASES = ("auto", "tokens", "orthonormal")


class TokenSet(NamedTuple):
    """The distinct non-zero tokens of a batch X (n, M, d).

    U: (n_u, d) unique non-zero tokens, in order of first occurrence (row-major over (i, l)).
    index: (n, M) int, X[i, l] = U[index[i, l]]; -1 marks a zero token.
    counts: (n_u,) occurrences of each unique token.
    Et: sparse (n_u, n·M) 0/1 matrix Eᵀ: Eᵀ D sums the rows of repeated tokens (zero tokens left out).
    """
    U: np.ndarray
    index: np.ndarray
    counts: np.ndarray
    Et: scipy.sparse.csr_matrix

    @property
    def n_unique(self) -> int:
        return self.U.shape[0]

    def scatter(self, D: np.ndarray) -> np.ndarray:
        """Eᵀ D: sum the per-token rows D (n, M, ...) over the occurrences of each unique token -> (n_u, ...)."""
        flat = D.reshape(self.index.size, -1)
        return np.asarray(self.Et @ flat).reshape((self.n_unique,) + D.shape[2:])

    def gather(self, V: np.ndarray) -> np.ndarray:
        """E V: per-unique-token rows V (n_u, ...) back to every token position -> (n, M, ...), zero for zero tokens."""
        out = V[np.maximum(self.index, 0)]
        if self.Et.nnz < self.index.size:              # some zero tokens: their projections are exactly 0
            out[self.index < 0] = 0.0
        return out


# odd 64-bit multipliers for an exact integer row hash (wrapping arithmetic, so the summation order is irrelevant)
def _row_hash(flat: np.ndarray) -> np.ndarray:
    d = flat.shape[1]
    mult = (np.arange(1, d + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)) | np.uint64(1)
    return np.einsum("ij,j->i", flat.view(np.uint64), mult)


def unique_tokens(X: np.ndarray) -> TokenSet:
    """Deduplicate the tokens of X (n, M, d) exactly (equal rows) and drop the all-zero ones.

    Rows are grouped by an exact integer hash of their bits and every group with more than one member is then
    compared entry by entry; if a hash collision ever merged different rows, an exact sort of the rows is used
    instead. Either way two tokens are merged only if they are equal.
    """
    n, M, d = X.shape
    flat = np.ascontiguousarray(X.reshape(n * M, d), dtype=np.float64)
    nonzero = np.flatnonzero(np.any(flat != 0.0, axis=1))
    if nonzero.size == 0:
        raise ValueError("every token of X is zero: there is no token span to train in; check the data")
    rows = flat[nonzero]
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
    index = np.full(n * M, -1, dtype=np.int64)
    index[nonzero] = inverse
    Et = scipy.sparse.csr_matrix((np.ones(nonzero.size), (inverse, nonzero)), shape=(U.shape[0], n * M))
    return TokenSet(U, index.reshape(n, M), np.bincount(inverse, minlength=U.shape[0]), Et)


def orthonormal_basis(U: np.ndarray) -> np.ndarray:
    """An orthonormal basis (d, r) of the row space of U (n_u, d), r = numerical rank, by a column-pivoted QR of Uᵀ.

    Rank tolerance as ``numpy.linalg.matrix_rank``: |R_kk| > |R_00|·max(d, n_u)·ε, on unit-norm tokens so that
    weak tokens (‖x‖ ≈ 6) are not mistaken for rounding noise next to strong ones (‖ξ‖ ≈ 128).
    """
    Un = U / np.linalg.norm(U, axis=1, keepdims=True)
    Qm, R, _ = scipy.linalg.qr(Un.T, mode="economic", pivoting=True)
    diag = np.abs(np.diag(R))
    rank = int(np.sum(diag > diag[0] * max(U.shape) * np.finfo(float).eps))
    return np.ascontiguousarray(Qm[:, :rank])


def _add_into(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a += b, returning a (no second temporary of the same size)."""
    a += b
    return a


class SpanObjective:
    """The span-coordinate backend for ``refvit.train.run`` (PAPER §5.5). Plain GD only.

    Parameters
    ----------
    params : initial ``Params`` W(0): W_Q, W_K (d, d_h), W_V (d, d_v), w_O (d_v,).
    X, y : training set, (N, M, d) and (N,) in {±1}.
    X_test, y_test : optional test set, (n_test, M, d) and (n_test,); evaluated exactly (see ``test_outputs``).
    core : attention core, "numpy" (default), "numba" or "auto" (``model.attention_core``). At the paper's sizes the
        two cost about the same next to the Gram products (one core, N=20, M=16, d_h=512: forward 0.17 vs 0.14 ms,
        backward ≈1.2 ms each), and the numpy core needs no compilation.
    basis : "auto" (tokens if n_u ≤ d, else orthonormal), "tokens" or "orthonormal" (module docstring).

    State: (A_Q (r, d_h), A_K (r, d_h), A_V (r, d_v), w_O (d_v,)), all zero but w_O at the start.
    """

    VW0_MAX_TOKENS = 64   # precompute U·W_V(0) up to this many unique tokens (see __init__)

    def __init__(self, params, X, y, X_test=None, y_test=None, core: str = "numpy", basis: str = "auto"):
        # Inputs are assumed checked, as for DenseObjective: ``train`` and ``span_train`` validate them once.
        if basis not in BASES:
            raise ValueError(f"unknown basis {basis!r}; choose one of {', '.join(map(repr, BASES))}")
        if (X_test is None) != (y_test is None):
            raise ValueError("give both X_test and y_test, or neither")
        self.params0 = params = Params(*(np.asarray(a, dtype=np.float64) for a in params))
        self.X, self.y, self.X_test, self.y_test = X, y, X_test, y_test
        self._fwd, self._bwd = attention_core(core)
        self.tokens = tok = unique_tokens(X)
        U = tok.U
        if basis == "auto":
            basis = "tokens" if tok.n_unique <= X.shape[2] else "orthonormal"
        self.basis = basis
        W_Q0, W_K0, W_V0, w_O0 = params
        if basis == "tokens":
            self.P = U.T                                # (d, r) r = n_u: the tokens themselves
            self.U_c = U @ U.T                          # (n_u, r) Gram matrix UUᵀ (coordinates of U in P)
        else:
            self.P = orthonormal_basis(U)               # (d, r) r = rank(U) ≤ d
            self.U_c = U @ self.P                       # (n_u, r)
        r, d_h = self.P.shape[1], W_Q0.shape[1]
        self.QW0 = U @ W_Q0                             # (n_u, d_h) U·W_Q(0), once
        self.KW0 = U @ W_K0                             # (n_u, d_h) U·W_K(0), once
        self.state0 = (np.zeros((r, d_h)), np.zeros((r, d_h)), np.zeros((r, W_V0.shape[1])), w_O0.copy())
        self.final_state = None
        self._u0 = (w_O0.copy(), W_V0 @ w_O0)           # W_V(0) w_O for the last w_O seen (constant if frozen)
        # U·W_V(0) (n_u, d_v) turns the two d×d_v matrix-vector products of the value path (memory-bound: they read
        # all of W_V(0) every step) into n_u×d_v ones. It costs about as much as a few such reads when n_u is
        # small (dynamics: n_u = 22), but 25 of them at n_u = 302 (Figure 1, which stops after ~10-30 steps).
        self.VW0 = U @ W_V0 if tok.n_unique <= self.VW0_MAX_TOKENS else None
        self._qk_memo = self._v_memo = None
        self._test_calls = 0
        self._test_tokens = self._test_cache = None

    # --- the interface used by refvit.train.run ----------------------------------------------------------------

    def _coef(self, Gamma_tok: np.ndarray) -> np.ndarray:
        """Left-factor coefficients in P from per-unique-token rows Eᵀ D: identity in the token basis."""
        return Gamma_tok if self.basis == "tokens" else self.U_c.T @ Gamma_tok

    def _WV0_w(self, w_O: np.ndarray) -> np.ndarray:
        """W_V(0) w_O (d,), recomputed only when w_O changed (reading W_V(0) costs more than the rest of the path)."""
        if not np.array_equal(self._u0[0], w_O):
            self._u0 = (np.array(w_O, copy=True), self.params0.W_V @ w_O)
        return self._u0[1]

    def value_and_grad(self, state):
        """(loss, (Γ_Q, Γ_K, Γ_V, ∇w_O), f (N,), Cache) at coordinates ``state``; Γ as in the module docstring."""
        A_Q, A_K, A_V, w_O = state
        tok = self.tokens
        # U·W(t) = U·W(0) + U_c·A(t); at A = 0 (the first step) the product is skipped
        Qu = _add_into(self.U_c @ A_Q, self.QW0) if A_Q.any() else self.QW0      # (n_u, d_h)
        Ku = _add_into(self.U_c @ A_K, self.KW0) if A_K.any() else self.KW0      # (n_u, d_h)
        UWV0_w = self.VW0 @ w_O if self.VW0 is not None else tok.U @ self._WV0_w(w_O)
        vu = UWV0_w + self.U_c @ (A_V @ w_O)            # (n_u,) U·W_V(t)·w_O, never U·W_V(t)
        Q, K, v = tok.gather(Qu), tok.gather(Ku), tok.gather(vu)
        Z, S, abar, f = self._fwd(Q, K, v)
        # forward: L = (1/N) Σ_i ℓ(y_i f_i), so dL/df_i = c_i = ℓ'_i y_i / N (PAPER §4)
        df = logistic_loss_derivative(self.y * f) * self.y / self.X.shape[0]
        dQ, dK, dv = self._bwd(df, S, v, Q, K)
        dvu = tok.scatter(dv)                           # (n_u,) Σ_i c_i ā_{i,j} over the occurrences of each token
        Gamma_Q = self._coef(tok.scatter(dQ))           # (r, d_h)  ∇W_Q = P Γ_Q
        Gamma_K = self._coef(tok.scatter(dK))           # (r, d_h)  ∇W_K = P Γ_K
        Gamma_V = np.outer(self._coef(dvu), w_O)        # (r, d_v)  ∇W_V = Xᵀ dv w_Oᵀ = P Γ_V
        # forward: v = X W_V w_O, so ∇w_O = W_V(t)ᵀ Xᵀ dv = W_V(0)ᵀ (Uᵀ dvu) + A_Vᵀ (U_cᵀ dvu)
        dW0 = self.VW0.T @ dvu if self.VW0 is not None else self.params0.W_V.T @ (tok.U.T @ dvu)
        dw_O = dW0 + A_V.T @ (self.U_c.T @ dvu)
        return mean_loss(f, self.y), (Gamma_Q, Gamma_K, Gamma_V, dw_O), f, Cache(Q, K, v, Z, S, abar)

    def _dense_qk(self, A_Q, A_K) -> np.ndarray:
        """[W_Q(t) | W_K(t)] = [W_Q(0) | W_K(0)] + P [A_Q | A_K] (d, 2 d_h), memoized on (A_Q, A_K).

        One stacked product instead of two: the test projection U_test·[W_Q | W_K] is then a single, larger and
        slightly faster (≈8%) BLAS call.
        """
        m = self._qk_memo
        if m is not None and np.array_equal(m[0], A_Q) and np.array_equal(m[1], A_K):
            return m[2]
        W = np.hstack([self.params0.W_Q, self.params0.W_K]) + self.P @ np.hstack([A_Q, A_K])
        self._qk_memo = (A_Q.copy(), A_K.copy(), W)
        return W

    def _dense_v(self, A_V, w_O) -> np.ndarray:
        """W_V(t) = W_V(0) + P A_V (d, d_v).

        With w_O frozen every Γ_V is (·) w_Oᵀ, so A_V = a w_Oᵀ (PAPER §5.2, rank one). When A_V has that form to
        1e-12 (checked, O(r d_v)), W_V(t) = W_V(0) + (P a) w_Oᵀ costs O(d r + d d_v) instead of O(d r d_v); the two
        differ only by rounding (~1e-15 relative in W_V(t) − W_V(0)).
        """
        ww = float(w_O @ w_O)
        if ww > 0:
            a = A_V @ w_O / ww
            if np.linalg.norm(A_V - np.outer(a, w_O)) <= 1e-12 * np.linalg.norm(A_V):
                return self.params0.W_V + np.outer(self.P @ a, w_O)
        return self.params0.W_V + self.P @ A_V

    def test_outputs(self, state) -> np.ndarray:
        """f on the test set (n_test,), exactly: X_test·W(t) = X_test·W(0) + (X_test·P)·A(t) = X_test·(W(0) + P·A(t)).

        Test tokens are deduplicated too (μ± once) and X_test·W_V is never formed (only u = W_V w_O). A single
        evaluation at the end of training (the default, ``eval_every=0``) forms [W_Q(t) | W_K(t)] once, which
        ``params`` reuses, and projects the unique test tokens on it. Repeated evaluations (``eval_every``) cache
        X_test·W(0) (computed at A = 0 anyway) and X_test·P, after which a call costs O(n_test M r d_h).
        """
        if self.X_test is None:
            raise ValueError("this objective has no test set; pass X_test and y_test")
        A_Q, A_K, A_V, w_O = state
        d_h = A_Q.shape[1]
        self._test_calls += 1
        if self._test_tokens is None:
            self._test_tokens = unique_tokens(self.X_test)
        tt = self._test_tokens
        at_init = not (A_Q.any() or A_K.any())
        if at_init or self._test_calls > 1:
            if self._test_cache is None:                               # X_test·[W_Q(0) | W_K(0)], once
                self._test_cache = (tt.U @ np.hstack([self.params0.W_Q, self.params0.W_K]), None)
            QK, UP = self._test_cache
            if not at_init:
                if UP is None:                                         # X_test·P, once
                    UP = tt.U @ self.P
                    self._test_cache = (QK, UP)
                QK = QK + UP @ np.hstack([A_Q, A_K])
        else:
            QK = tt.U @ self._dense_qk(A_Q, A_K)                       # (n_ut, 2 d_h)
        u = self._WV0_w(w_O) + self.P @ (A_V @ w_O)                   # (d,) u = W_V(t) w_O
        return self._fwd(tt.gather(QK[:, :d_h]), tt.gather(QK[:, d_h:]), tt.gather(tt.U @ u))[3]

    def params(self, state) -> Params:
        """Dense ``Params`` W(0) + P·A(t). The loop calls this once at the end; the coordinates are kept as
        ``final_state`` so that the decomposition can be read from them (``decomposition``)."""
        self.final_state = tuple(np.array(a, copy=True) for a in state)
        A_Q, A_K, A_V, w_O = state
        W = self._dense_qk(A_Q, A_K)
        d_h = A_Q.shape[1]
        return Params(W[:, :d_h], W[:, d_h:], self._dense_v(A_V, w_O), np.array(w_O, copy=True))

    # --- the decomposition from the trainer's own coordinates (PAPER §5.5, "for free") -----------------------

    def decomposition(self, state=None, signals=None, params=None):
        """``refvit.decompose.Decomposition`` read from the coordinates (default: the final state of the run).

        In the token basis the rows of A_Q, A_K are α_u, β_u and A_V w_O = b gives coef_u = ‖u‖² b_u (PAPER §5.5).
        In the orthonormal basis the rows name basis vectors; the per-token coefficients are then recovered from
        P·A by ``refvit.decompose`` where they are identifiable and reported as NaN where not.
        signals : (μ₊, μ₋), each (d,), to name γ₊ and γ₋; without it γ± are NaN.
        params : dense weights W(t) from another run (e.g. the dense trainer) to measure the reconstruction
            residual ‖W(t) − W(0) − Σ_u u·coef_u‖ / ‖W(t) − W(0)‖ against; without it the residual is NaN (against
            this trainer's own W(0) + P·A it would be zero by construction).
        """
        from . import decompose
        if state is None:
            if self.final_state is None:
                raise ValueError("no final state yet: train first (refvit.train.run calls params() at the end)")
            state = self.final_state
        A_Q, A_K, A_V, w_O = state
        if self.basis == "tokens":
            return decompose.from_token_coordinates(self.tokens, A_Q, A_K, A_V, w_O, source="span",
                                                    signals=signals, params0=self.params0, params=params)
        dec = decompose.recover_from_deltas(self.tokens, self.P @ A_Q, self.P @ A_K, self.P @ A_V, w_O,
                                            source="span (orthonormal basis: rows of A name basis vectors, "
                                                   "not tokens)", signals=signals)
        if params is not None:
            dec = dec._replace(residual=decompose.residuals(self.tokens, dec, self.params0, params))
        return dec


def span_train(params, X, y, *, X_test=None, y_test=None, config, signals=None, core: str = "numpy",
               basis: str = "auto"):
    """Train with the span backend and also return its decomposition: (Params, History, Decomposition).

    ``config`` is a ``TrainConfig`` (its ``backend`` is ignored; the optimizer must be "gd").
    """
    from .train import check_train_inputs, run
    if config.optimizer != "gd":
        raise ValueError(f"the span backend supports optimizer='gd' only: {config.optimizer} updates are "
                         "elementwise, so they leave the span of the training tokens (PAPER §5.5)")
    params, X, y, X_test, y_test = check_train_inputs(params, X, y, X_test, y_test)
    objective = SpanObjective(params, X, y, X_test, y_test, core=core, basis=basis)
    params_t, history = run(objective, config)
    return params_t, history, objective.decomposition(signals=signals)
