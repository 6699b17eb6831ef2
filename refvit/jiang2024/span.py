"""Exact training in token coordinates (docs/math.md §8): W(t) = W(0) + P·A(t) for W ∈ {W_Q, W_K, W_V} (8.1).

Every GD update of W_Q, W_K and W_V is Xᵀ(…): its left factor lies in the span of the training tokens whether or not w_O
is trained (docs/math.md (7.1), (7.2)). So the trainer keeps the coefficient matrices A_Q, A_K (r, d_h) and A_V (r, d_v)
and never touches a d-dimensional matrix inside the loop. It is the same trajectory as the dense trainer, not an
approximation: only the rounding differs.

Basis P (d, r), chosen once from the *unique non-zero* training tokens U (n_u, d) (docs/math.md (8.2)):
    "tokens"      P = Uᵀ (r = n_u): row u of A belongs to token u (μ₊, μ₋, ξ_i, x_{i,l}), so the coefficients of
                  docs/math.md §7.2–§7.4 are read off directly. Used whenever n_u ≤ d. It stays exact even if the
                  tokens are linearly dependent (the coefficients are then the ones GD accumulates, but no longer
                  the only ones that give W(t); ``refvit.jiang2024.decompose`` says which are identifiable).
    "orthonormal" P = an orthonormal basis of span(U) from a pivoted QR (r = rank ≤ d). Used when n_u > d, where
                  the token basis would cost more than the dense model. Rows of A then name basis vectors, not
                  tokens.
Repeated tokens (μ± occurs once per image of its class) count once; zero tokens (other_tokens="zero") are dropped:
they contribute nothing to any gradient and have no direction to carry a coefficient.

With U_c := U·P (n_u, r) the coordinates of the unique tokens (U_c = UUᵀ, the Gram matrix, in the token basis;
docs/math.md (8.3)):
    U·W(t) = U·W(0) + U_c·A(t)          (n_u, d_h): queries/keys of every unique token; docs/math.md (8.4)
    ∇_W L_S = Σ_i X_iᵀ D_i = Uᵀ·(Eᵀ D) = P·Γ,  Γ = (Eᵀ D) in the token basis, U_cᵀ(Eᵀ D) otherwise (8.5),
where D = dQ, dK (or dv w_Oᵀ) are the per-token gradients from the attention core and Eᵀ sums the rows of repeated
tokens. GD on W is A ← A − ηΓ (docs/math.md (8.6)): the state gradient is Γ, **not** Pᵀ∇_W L_S = (PᵀP)Γ
(docs/math.md (8.7)).
Per step: one (n_u × r)·(r × 2 d_h) product U_c·[A_Q | A_K], O(n_u r d_h), against O(N M d d_h) for the dense step.
The per-sample work around it (gather each sample's query and key rows, its logits, softmax and their backward, dQ,
dK, and the scatter of their rows) is written twice: in numpy, a few array operations over all samples at a time,
and in the numba kernel ``_kernels.span_step``, one pass over the samples that keeps each one in cache
(core="numba"; the default where numba is usable). The two agree to rounding (tests/test_span_kernels.py).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..primitives import dloss_df, halves_of_one
from .model import Cache, Evaluation, Params, attention_from_logits, logits_backward, mean_loss, resolve_backend
from .tokens import all_tokens, orthonormal_basis, unique_tokens
from .objective import ViTObjective

BASES = ("auto", "tokens", "orthonormal")


class SpanState(NamedTuple):
    """The span trainer's state: W(t) = W(0) + P·A(t) for W_Q, W_K, W_V; w_O itself (docs/math.md (8.1))."""
    A_Q: np.ndarray   # (r, d_h)
    A_K: np.ndarray   # (r, d_h)
    A_V: np.ndarray   # (r, d_v)
    w_O: np.ndarray   # (d_v,)


def _add_into(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a += b, returning a (no second temporary of the same size)."""
    a += b
    return a


def _side_by_side(A_Q: np.ndarray, A_K: np.ndarray) -> np.ndarray:
    """[A_Q | A_K] (r, 2 d_h): the buffer whose two halves they are (``SpanObjective.fresh_state``, what training
    updates), without a copy; otherwise a stacked copy. Same values either way."""
    buf = halves_of_one(A_Q, A_K)
    return buf if buf is not None else np.hstack([A_Q, A_K])


def _first_positions(index: np.ndarray) -> np.ndarray:
    """(n M,) bool: True at the first position (row-major over (i, l)) of each unique token of ``index`` (n, M)."""
    flat = index.ravel()
    pos = np.flatnonzero(flat >= 0)
    first = np.zeros(flat.size, dtype=np.bool_)
    first[pos[np.unique(flat[pos], return_index=True)[1]]] = True
    return first


class SpanObjective(ViTObjective):
    """The span-coordinate backend for ``refvit.trainer.run`` (docs/math.md §8). Plain GD only.

    Parameters
    ----------
    params : initial ``Params`` W(0): W_Q, W_K (d, d_h), W_V (d, d_v), w_O (d_v,).
    X, y : training set, (N, M, d) and (N,) in {±1}.
    X_test, y_test : optional test set, (n_test, M, d) and (n_test,); evaluated exactly (see ``test_outputs``).
    core : "numpy" (default), "numba" or "auto" (numba when usable): the code of the per-sample work, numpy array
        operations or the fused kernel ``_kernels.span_step`` (module docstring).
    basis : "auto" (tokens if n_u ≤ d, else orthonormal), "tokens" or "orthonormal" (module docstring).
    grad_w_O : False when w_O is frozen (``TrainConfig.train_w_O=False``, how ``make_objective`` builds it): the
        ∇w_O entry of each gradient is then zeros, not computed, which saves reading W_V(0) (d × d_v) and U
        (n_u × d) at every step (docs/math.md (8.8)); nothing else changes, to the bit.

    State: (A_Q (r, d_h), A_K (r, d_h), A_V (r, d_v), w_O (d_v,)), all zero but w_O at the start. Training keeps
    A_Q and A_K as the two halves of one (r, 2 d_h) buffer (``fresh_state``), so that U_c·[A_Q | A_K] is one
    product (the same bits as two).
    """

    VW0_MAX_TOKENS = 64   # precompute U·W_V(0) up to this many unique tokens (see __init__)

    def __init__(self, params, X, y, X_test=None, y_test=None, core: str = "numpy", basis: str = "auto",
                 grad_w_O: bool = True):
        # Inputs are assumed checked, as for DenseObjective: ``train`` and ``span_train`` validate them once.
        if basis not in BASES:
            raise ValueError(f"unknown basis {basis!r}; choose one of {', '.join(map(repr, BASES))}")
        if (X_test is None) != (y_test is None):
            raise ValueError("give both X_test and y_test, or neither")
        self.params0 = params = Params(*(np.asarray(a, dtype=np.float64) for a in params))
        self.X, self.y, self.X_test, self.y_test = X, y, X_test, y_test
        self._step = None
        if resolve_backend(core) == "numba":
            from . import _kernels  # here, not at the top: importing it loads numba (~0.3 s)
            self._step = _kernels.span_step
        self.tokens = tok = unique_tokens(X)
        U = tok.U
        if basis == "auto":
            basis = "tokens" if tok.n_unique <= X.shape[2] else "orthonormal"
        self.basis = basis
        self.grad_w_O = grad_w_O
        W_Q0, W_K0, W_V0, w_O0 = params
        if basis == "tokens":
            self.P = U.T                                # (d, r) r = n_u: the tokens themselves (math 8.2)
            self.U_c = U @ U.T                          # (n_u, r) Gram matrix UUᵀ (coordinates of U in P) (math 8.3)
        else:
            self.P = orthonormal_basis(U)               # (d, r) r = rank(U) ≤ d (math 8.2)
            self.U_c = U @ self.P                       # (n_u, r) (math 8.3)
        r, d_h = self.P.shape[1], W_Q0.shape[1]
        self.QKW0 = np.empty((tok.n_unique, 2 * d_h))   # (n_u, 2 d_h) [U·W_Q(0) | U·W_K(0)], once
        np.matmul(U, W_Q0, out=self.QKW0[:, :d_h])
        np.matmul(U, W_K0, out=self.QKW0[:, d_h:])
        self._first = _first_positions(tok.index)       # (N M,) each token's first position (for span_step)
        self.state0 = SpanState(np.zeros((r, d_h)), np.zeros((r, d_h)), np.zeros((r, W_V0.shape[1])), w_O0.copy())
        self.final_state = None
        self._u0 = (w_O0.copy(), W_V0 @ w_O0, None)     # w_O, W_V(0) w_O, U·W_V(0) w_O (constant if frozen)
        # U·W_V(0) (n_u, d_v) turns the two d×d_v matrix-vector products of the value path (memory-bound: they read
        # all of W_V(0) every step) into n_u×d_v ones. It costs about as much as a few such reads when n_u is
        # small (dynamics: n_u = 22), but 25 of them at n_u = 302 (Figure 1, which stops after ~10-30 steps).
        self.VW0 = U @ W_V0 if tok.n_unique <= self.VW0_MAX_TOKENS else None
        self._qk_memo = self._v_memo = None
        self._test_calls = 0
        self._test_tokens = self._test_cache = None

    # --- the interface used by refvit.trainer.run ----------------------------------------------------------------

    def _coef(self, Gamma_tok: np.ndarray) -> np.ndarray:
        """Left-factor coefficients Γ in P from per-unique-token rows Eᵀ D (docs/math.md (8.5)): identity for tokens."""
        return Gamma_tok if self.basis == "tokens" else self.U_c.T @ Gamma_tok

    def _WV0_w(self, w_O: np.ndarray) -> np.ndarray:
        """W_V(0) w_O (d,), recomputed only when w_O changed (reading W_V(0) costs more than the rest of the path)."""
        if not np.array_equal(self._u0[0], w_O):
            self._u0 = (np.array(w_O, copy=True), self.params0.W_V @ w_O, None)
        return self._u0[1]

    def _UWV0_w(self, w_O: np.ndarray) -> np.ndarray:
        """U·W_V(0) w_O (n_u,), kept with W_V(0) w_O while w_O does not change (with w_O frozen: once per run)."""
        if self.VW0 is not None:
            return self.VW0 @ w_O
        u0 = self._WV0_w(w_O)
        if self._u0[2] is None:
            self._u0 = (*self._u0[:2], self.tokens.U @ u0)
        return self._u0[2]

    def fresh_state(self) -> SpanState:
        """``state0`` for training to update in place, A_Q and A_K as the halves of one (r, 2 d_h) buffer."""
        A_Q, A_K, A_V, w_O = self.state0
        AQK = np.zeros((A_Q.shape[0], 2 * A_Q.shape[1]))
        return SpanState(AQK[:, :A_Q.shape[1]], AQK[:, A_Q.shape[1]:], A_V.copy(), w_O.copy())

    def _attend(self, tok, QKW0: np.ndarray, UcA: np.ndarray | None, v: np.ndarray, backward: bool):
        """The per-sample work at the token positions of ``tok``, from the per-token rows [queries | keys] QKW0
        (+ UcA when not None), (n_u, 2 d_h), and the value scores v (n, M) (docs/math.md (8.4), (2.3)-(2.6)).
        Returns (f (n,), Cache) and, with ``backward`` (the training set), also dv (n, M) and
        G = Eᵀ[dQ | dK] (n_u, 2 d_h) (docs/math.md (4.1)-(4.10), (8.5)); else (f, None, None, None)."""
        (n, M), d_h = tok.index.shape, QKW0.shape[1] // 2
        if self._step is not None:                      # the fused kernel: nothing but its outputs is written
            keep = n if backward else 1                 # the test set keeps no Q, K: one sample's scratch
            Q, K, Z, S = np.empty((keep, M, d_h)), np.empty((keep, M, d_h)), np.empty((n, M, M)), np.empty((n, M, M))
            abar, f = np.empty((n, M)), np.empty(n)
            dv, G = np.empty((n, M)), np.empty((tok.n_unique if backward else 0, 2 * d_h))
            y, first = (self.y, self._first) if backward else (self.y[:0], self._first[:0])   # the training set's
            self._step(QKW0, UcA if UcA is not None else QKW0[:0], tok.index, v, y, float(self.X.shape[0]), first,
                       Q, K, Z, S, abar, f, dv, G)
            if not backward:
                return f, None, None, None
            return f, Cache(Q, K, v, Z, S, abar), dv, G
        QKu = QKW0 if UcA is None else _add_into(UcA, QKW0)
        Q, K = tok.gather(QKu[:, :d_h]), tok.gather(QKu[:, d_h:])
        Z = Q @ K.transpose(0, 2, 1)                    # (n, M, M) (math 2.3)
        S, abar, f = attention_from_logits(Z, v)
        if not backward:
            return f, None, None, None
        df = dloss_df(f, self.y)                        # dL/df_i = ℓ'(y_i f_i) y_i / N (math 4.1)
        dZ, dv = logits_backward(df, S, v)              # (math 4.2, 4.7)
        G = np.empty((tok.n_unique, 2 * d_h))           # Eᵀ [dQ | dK]: per-token rows summed over occurrences (8.5)
        G[:, :d_h] = tok.scatter(dZ @ K)                            # dQ = dZ K (math 4.10)
        G[:, d_h:] = tok.scatter(dZ.transpose(0, 2, 1) @ Q)         # dK = dZᵀ Q (math 4.10)
        return f, Cache(Q, K, v, Z, S, abar), dv, G

    def value_and_grad(self, state):
        """(loss, (Γ_Q, Γ_K, Γ_V, ∇w_O), f (N,), Cache) at coordinates ``state``; Γ as in the module docstring.
        Γ_Q and Γ_K are the two halves of one (r, 2 d_h) array."""
        A_Q, A_K, A_V, w_O = state
        tok = self.tokens
        d_h = A_Q.shape[1]
        AQK = _side_by_side(A_Q, A_K)
        # U·[W_Q(t) | W_K(t)] = U·[W_Q(0) | W_K(0)] + U_c·[A_Q | A_K] (math 8.4), one product for both; at A = 0
        # (the first step) it is skipped. Row 0 answers "is A non-zero?" without reading all of A, most of the time.
        UcA = self.U_c @ AQK if AQK[0].any() or AQK.any() else None                 # (n_u, 2 d_h)
        vu = self._UWV0_w(w_O) + self.U_c @ (A_V @ w_O)  # (n_u,) U·W_V(t)·w_O, never U·W_V(t) (math 8.4)
        v = tok.gather(vu)
        f, cache, dv, G = self._attend(tok, self.QKW0, UcA, v, backward=True)
        G = self._coef(G)                               # (r, 2 d_h) [Γ_Q | Γ_K]: ∇W_Q = P Γ_Q, ∇W_K = P Γ_K (8.5)
        dvu = tok.scatter(dv)                           # (n_u,) Σ c_i ā_{i,j} over each token's occurrences (math 7.3)
        Gamma_V = np.outer(self._coef(dvu), w_O)        # (r, d_v)  ∇W_V = Xᵀ dv w_Oᵀ = P Γ_V (math 8.5)
        if self.grad_w_O:
            # forward: v = X W_V w_O, so ∇w_O = W_V(t)ᵀ Xᵀ dv = W_V(0)ᵀ (Uᵀ dvu) + A_Vᵀ (U_cᵀ dvu)  (math 8.8)
            dW0 = self.VW0.T @ dvu if self.VW0 is not None else self.params0.W_V.T @ (tok.U.T @ dvu)
            dw_O = dW0 + A_V.T @ (self.U_c.T @ dvu)     # (math 8.8)
        else:
            dw_O = np.zeros_like(w_O)                   # w_O frozen: not computed (see grad_w_O)
        return Evaluation(mean_loss(f, self.y), SpanState(G[:, :d_h], G[:, d_h:], Gamma_V, dw_O), f, cache)

    def _dense_qk(self, A_Q, A_K) -> np.ndarray:
        """[W_Q(t) | W_K(t)] = [W_Q(0) | W_K(0)] + P [A_Q | A_K] (d, 2 d_h), memoized on (A_Q, A_K).

        One stacked product instead of two: the test projection U_test·[W_Q | W_K] is then a single, larger and
        slightly faster (≈8%) BLAS call.
        """
        m = self._qk_memo
        if m is not None and np.array_equal(m[0], A_Q) and np.array_equal(m[1], A_K):
            return m[2]
        d_h = A_Q.shape[1]
        W = self.P @ _side_by_side(A_Q, A_K)            # (d, 2 d_h), then + W(0) in place, half by half (math 8.1)
        W[:, :d_h] += self.params0.W_Q
        W[:, d_h:] += self.params0.W_K
        self._qk_memo = (A_Q.copy(), A_K.copy(), W)
        return W

    def _dense_v(self, A_V, w_O) -> np.ndarray:
        """W_V(t) = W_V(0) + P A_V (d, d_v).

        With w_O frozen every Γ_V is (·) w_Oᵀ, so A_V = a w_Oᵀ (docs/math.md (7.11), rank one). When A_V has that form
        to 1e-12 (checked, O(r d_v)), W_V(t) = W_V(0) + (P a) w_Oᵀ costs O(d r + d d_v) instead of O(d r d_v); the two
        differ only by rounding (~1e-15 relative in W_V(t) − W_V(0)).
        """
        ww = float(w_O @ w_O)
        if ww > 0:
            a = A_V @ w_O / ww
            if np.linalg.norm(A_V - np.outer(a, w_O)) <= 1e-12 * np.linalg.norm(A_V):
                return self.params0.W_V + np.outer(self.P @ a, w_O)   # rank one (math 7.11)
        return self.params0.W_V + self.P @ A_V                        # (math 8.1)

    def test_outputs(self, state) -> np.ndarray:
        """f on the test set (n_test,), exactly: X_test·W(t) = X_test·W(0) + (X_test·P)·A(t) (docs/math.md (8.9)).

        X_test·W_V is never formed (only u = W_V w_O). A single evaluation at the end of training (the default,
        ``eval_every=0``) forms [W_Q(t) | W_K(t)] once, which ``params`` reuses, and projects every test token on it
        (``all_tokens``: searching for the few repeated ones, μ±, would cost more than the rows it saves).
        Repeated evaluations (``eval_every``) deduplicate the test tokens and cache X_test·W(0) (computed at A = 0
        anyway) and X_test·P, after which a call costs O(n_test M r d_h).
        """
        if self.X_test is None:
            raise ValueError("this objective has no test set; pass X_test and y_test")
        A_Q, A_K, A_V, w_O = state
        self._test_calls += 1
        at_init = not (A_Q.any() or A_K.any())
        if at_init or self._test_calls > 1:
            if self._test_tokens is None:
                self._test_tokens = unique_tokens(self.X_test)
            tt = self._test_tokens
            if self._test_cache is None:                               # X_test·[W_Q(0) | W_K(0)], once
                self._test_cache = (tt.U @ np.hstack([self.params0.W_Q, self.params0.W_K]), None)
            QK, UP = self._test_cache
            if not at_init:
                if UP is None:                                         # X_test·P, once
                    UP = tt.U @ self.P
                    self._test_cache = (QK, UP)
                QK = QK + UP @ np.hstack([A_Q, A_K])
        else:                                                          # one evaluation: no search for repeats
            tt = all_tokens(self.X_test)
            QK = tt.U @ self._dense_qk(A_Q, A_K)                       # (n_test M, 2 d_h)
        u = self._WV0_w(w_O) + self.P @ (A_V @ w_O)                   # (d,) u = W_V(t) w_O (math 2.2, 8.1)
        return self._attend(tt, QK, None, tt.gather(tt.U @ u), backward=False)[0]

    def params(self, state) -> Params:
        """Dense ``Params`` W(0) + P·A(t) (docs/math.md (8.1)). The loop calls this once at the end; the coordinates
        are kept as ``final_state`` so that the decomposition can be read from them
        (``refvit.jiang2024.tracking.span_decomposition``)."""
        self.final_state = SpanState(*(np.array(a, copy=True) for a in state))
        A_Q, A_K, A_V, w_O = state
        W = self._dense_qk(A_Q, A_K)
        d_h = A_Q.shape[1]
        return Params(W[:, :d_h], W[:, d_h:], self._dense_v(A_V, w_O), np.array(w_O, copy=True))
