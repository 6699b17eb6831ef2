"""The second setting's sparse path (refvit.li2025.sparse, refvit.li2025._kernels, SparseLiObjective) against the
reference model (refvit.li2025.model, LiObjective): kernels against their pure-Python form, the compressed tokens
against the dense ones, f, loss, cache and every gradient block on random problems, and whole training runs through
refvit.trainer.run with every tracked series of the History."""
import numpy as np
import pytest

from refvit.config import TrainConfig
from refvit.li2025 import LiDataConfig, LiModelConfig, LiParams, init_params, make_dataset
from refvit.li2025 import _kernels
from refvit.li2025.model import forward_cache, loss_grads_cache, value_direction
from refvit.li2025.objective import LiObjective, SparseLiObjective, make_objective, train
from refvit.jit import numba_usable
from refvit.li2025.sparse import sparse_forward_cache, sparse_loss_grads_cache, sparse_tokens
from refvit.streams import streams
from refvit.trainer import run

# Both paths add the same few products in another order: the projections sum ≤ s + 2 non-zero products (BLAS:
# blocked, with fused multiply-adds over all d coordinates, zeros included; the kernels: one after the other), and
# the logits, softmax, readout and backward sum L or m_k terms (numpy's matmul and einsum against the kernels'
# loops). So every quantity differs by a few ulps of its largest terms, passed on with an O(1) factor at the O(1)
# logits and margins used here: measured ≤ 2e-14 over the problems below (f, cache and every gradient block).
# 1e-12 leaves a factor 50; a dropped non-zero, a wrong coordinate or a missing term moves a block by 1e-3 or more.
RTOL = 1e-12
# Whole GD and Adam runs carry the per-step rounding differences along (each update depends smoothly on the state,
# with a Lipschitz factor near 1 at these step sizes), so they may grow over the steps; SignGD updates by ±η, so
# its states stay equal to the bit while every gradient sign agrees. Measured ≤ 1e-15 over the runs below; 1e-10
# leaves room for growth in longer runs while a changed update or record is off by far more.
RUN_RTOL = 1e-10


def rel_diff(a, b) -> float:
    """max |a − b| / max |b| (NaN where both are NaN counts as equal): a norm-wise relative difference, so entries
    that are zero in both (off the support) or tiny by cancellation do not inflate it."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    both_nan = np.isnan(a) & np.isnan(b)
    assert np.array_equal(np.isnan(a), np.isnan(b)), "NaN in one path only"
    diff = np.where(both_nan, 0.0, np.abs(a - b))
    scale = np.max(np.where(both_nan, 0.0, np.abs(b)), initial=0.0)
    return float(diff.max(initial=0.0) / scale) if scale > 0 else float(diff.max(initial=0.0))


def random_problem(seed: int, noise: str = "sparse"):
    """(LiDataset, LiParams, LiModelConfig) with sizes, signal positions, feature noise α, flips, c_L and λ drawn
    from the seed; σ₀ = 0.4 gives O(1) logits and margins, where a wrong attention term shows."""
    rng = np.random.default_rng([7, seed])
    d = int(rng.integers(6, 60))
    N = int(rng.integers(3, 9))
    data = LiDataConfig(N=N, d=d, s=int(rng.integers(1, d)), mu_norm=float(rng.uniform(0.5, 2.0)), noise=noise,
                        signal_position="random", alpha=float(rng.uniform(0.1, 0.5)),
                        flip_rate=0.25 if N >= 4 else 0.0, n_test=int(rng.integers(2, 12)))
    model = LiModelConfig(m_k=int(rng.integers(1, 6)), m_v=int(rng.integers(1, 5)), sigma0=0.4,
                          c_L=("sum", "mean")[seed % 2], logit_scale=float(rng.uniform(0.5, 2.0)))
    st = streams(seed)
    return make_dataset(data, st.data, st.test), init_params(model, d, st.init), model


def full_support(n: int, d: int) -> np.ndarray:
    """Every coordinate 1..d−1 for every sample: lets the sparse functions run on dense noise as well."""
    return np.tile(np.arange(1, d), (n, 1))


def densify(tokens) -> np.ndarray:
    """X (n, L, d) rebuilt from SparseTokens, row by row (an independent reading of the compressed form)."""
    n, L, d = tokens.shape
    X = np.zeros((n * L, d))
    for r in range(n * L):
        for p in range(tokens.indptr[r], tokens.indptr[r + 1]):
            X[r, tokens.indices[p]] = tokens.data[p]
    return X.reshape(n, L, d)


# ---------------------------------------------------------------------------------------------------------------
# The kernels and the compressed tokens
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(3))
def test_kernels_equal_their_python_form_to_the_bit(seed):
    """Strict njit loops (no fastmath) round as the interpreted Python does: an exact oracle for the compilation."""
    if not numba_usable():
        pytest.skip("numba not usable: the kernels are their Python form")
    ds, p, model = random_problem(seed)
    t = sparse_tokens(ds.X, ds.support)
    n, L, d = t.shape
    G = _kernels.gather(p.W_Q, p.W_K, p.W_V, t.cols)
    assert np.array_equal(G, _kernels.gather.py_func(p.W_Q, p.W_K, p.W_V, t.cols))
    args = (t.indptr, t.local, t.data, G, n, L, model.c(L), model.logit_scale)
    fwd = _kernels.forward(*args)
    for fast, slow in zip(fwd, _kernels.forward.py_func(*args)):
        assert np.array_equal(fast, slow)
    df = np.random.default_rng(seed).standard_normal(n)                 # a random cotangent, not ones
    Q, K, u, _, S, _ = fwd
    args = (t.indptr, t.indices, t.data, df, Q, K, u, S, model.c(L), model.logit_scale, d, model.m_v)
    for fast, slow in zip(_kernels.backward(*args), _kernels.backward.py_func(*args)):
        assert np.array_equal(fast, slow)


@pytest.mark.parametrize("seed", range(3))
def test_gathered_columns_are_the_reference_to_the_bit(seed):
    """value_at sums the m_v rows in the order numpy's mean over axis 0 does, then divides: the same bits; the
    columns of W_Q and W_K are copied."""
    ds, p, _ = random_problem(seed)
    t = sparse_tokens(ds.X, ds.support)
    assert np.array_equal(_kernels.value_at(p.W_V, t.cols), value_direction(p.W_V)[t.cols])
    m_k = p.W_Q.shape[0]
    G = _kernels.gather(p.W_Q, p.W_K, p.W_V, t.cols)                   # copies: exact
    assert np.array_equal(G[:, :m_k], p.W_Q[:, t.cols].T) and np.array_equal(G[:, m_k:2 * m_k], p.W_K[:, t.cols].T)
    assert np.array_equal(G[:, 2 * m_k], value_direction(p.W_V)[t.cols])


@pytest.mark.parametrize("seed", range(4))
def test_sparse_tokens_hold_exactly_the_tokens(seed):
    ds, _, _ = random_problem(seed)
    for X, support in ((ds.X, ds.support), (ds.X_test, ds.support_test)):
        t = sparse_tokens(X, support)
        assert np.array_equal(densify(t), X)                           # values copied, not computed: exact
        assert t.data.size == np.count_nonzero(X)                      # no stored zeros
        n = X.shape[0]
        rows = np.arange(n)
        signal_rows = rows * 2 + ds.signal_pos[:n] if X is ds.X else rows * 2 + ds.signal_pos_test
        assert np.all(np.diff(t.indptr)[signal_rows] == 1)             # a signal token is ±‖μ‖e₀: one non-zero


def test_sparse_tokens_refuse_data_off_the_support():
    ds, _, _ = random_problem(0)
    X = ds.X.copy()
    outside = np.setdiff1d(np.arange(1, X.shape[2]), ds.support[0])[0]
    X[0, 1 - ds.signal_pos[0], outside] = 0.5
    with pytest.raises(ValueError, match="outside coordinate 0 and the noise support"):
        sparse_tokens(X, ds.support)
    with pytest.raises(ValueError, match="support"):
        sparse_tokens(ds.X, ds.support[:, ::-1])                        # not increasing
    with pytest.raises(ValueError, match="support"):
        sparse_tokens(ds.X, ds.support[1:])                             # wrong number of samples


# ---------------------------------------------------------------------------------------------------------------
# One evaluation: loss, f, cache and every gradient block
# ---------------------------------------------------------------------------------------------------------------

def assert_same_evaluation(fast, ref, what: str):
    assert abs(fast.loss - ref.loss) <= RTOL * abs(ref.loss), (what, fast.loss, ref.loss)
    assert rel_diff(fast.f, ref.f) <= RTOL, (what, "f", rel_diff(fast.f, ref.f))
    for name, a, b in zip(LiParams._fields, fast.grads, ref.grads):
        assert rel_diff(a, b) <= RTOL, (what, name, rel_diff(a, b), np.unravel_index(np.argmax(np.abs(a - b)), b.shape))
    for name, a, b in zip(ref.cache._fields, fast.cache, ref.cache):
        assert rel_diff(a, b) <= RTOL, (what, "cache", name, rel_diff(a, b))


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("noise", ["sparse", "dense"])
def test_evaluation_equals_the_reference(seed, noise):
    """Random sizes, signal positions, α ≠ 0, flipped labels, c_L "sum"/"mean", λ ≠ 1; at the O(1)-logit init and
    after five SignGD steps (logits and margins moved). Dense noise runs on the full support 1..d−1."""
    ds, p, model = random_problem(seed, noise)
    N, _, d = ds.X.shape
    support = ds.support if noise == "sparse" else full_support(N, d)
    t = sparse_tokens(ds.X, support)
    for step in range(6):
        ref = loss_grads_cache(p, ds.X, ds.y, model)
        assert_same_evaluation(sparse_loss_grads_cache(p, t, ds.y, model), ref, f"step {step}")
        p = LiParams(*(w - 0.05 * np.sign(g) for w, g in zip(p, ref.grads)))
    assert np.max(np.abs(ref.cache.Z)) > 0.1                           # the logits did move off zero
    support_test = ds.support_test if noise == "sparse" else full_support(ds.X_test.shape[0], d)
    f_fast, cache = sparse_forward_cache(p, sparse_tokens(ds.X_test, support_test), model)
    f_ref, cache_ref = forward_cache(p, ds.X_test, model)
    assert rel_diff(f_fast, f_ref) <= RTOL
    for name, a, b in zip(cache_ref._fields, cache, cache_ref):
        assert rel_diff(a, b) <= RTOL, ("test cache", name)


def test_gradients_vanish_off_the_support_in_both_paths():
    """W_Q, W_K and W_V get gradient only on coordinate 0 and the union of the noise supports."""
    model = LiModelConfig(m_k=3, m_v=2, sigma0=0.4, logit_scale=1.3)
    st = streams(3)
    ds = make_dataset(LiDataConfig(N=3, d=50, s=4, alpha=0.3, signal_position="random", n_test=2), st.data, st.test)
    p = init_params(model, 50, st.init)
    touched = np.union1d([0], ds.support)
    off = np.setdiff1d(np.arange(ds.X.shape[2]), touched)
    assert off.size > 0
    fast = sparse_loss_grads_cache(p, sparse_tokens(ds.X, ds.support), ds.y, model)
    ref = loss_grads_cache(p, ds.X, ds.y, model)
    for a, b in zip(fast.grads, ref.grads):
        assert not np.any(a[..., off]) and not np.any(b[..., off])
        assert np.all(np.any(a[..., touched] != 0, axis=tuple(range(a.ndim - 1))))


def test_a_broken_kernel_fails_the_comparison(monkeypatch):
    """Mutation: a backward pass that drops each row's first non-zero (coordinate 0 of every signal token) must be
    caught by the comparison above."""
    ds, p, model = random_problem(1)
    good = _kernels.backward

    def broken(indptr, indices, data, *rest):
        data = data.copy()
        data[indptr[:-1]] = 0.0
        return good(indptr, indices, data, *rest)

    monkeypatch.setattr(_kernels, "backward", broken)
    fast = sparse_loss_grads_cache(p, sparse_tokens(ds.X, ds.support), ds.y, model)
    with pytest.raises(AssertionError):
        assert_same_evaluation(fast, loss_grads_cache(p, ds.X, ds.y, model), "broken")


# ---------------------------------------------------------------------------------------------------------------
# Whole training runs through refvit.trainer.run
# ---------------------------------------------------------------------------------------------------------------

def assert_same_history(fast, ref, tol: float):
    assert fast.status == ref.status and fast.steps == ref.steps
    assert np.array_equal(fast.step, ref.step)
    assert set(fast.values) == set(ref.values)
    for key in ref.values:
        assert rel_diff(fast[key], ref[key]) <= tol, (key, rel_diff(fast[key], ref[key]))
    for name in ("final_train_loss", "final_test_loss", "final_test_error"):
        assert rel_diff(getattr(fast, name), getattr(ref, name)) <= tol, name


RUNS = {
    "signgd": dict(optimizer="signgd", lr=0.02, steps=40, eval_every=10),
    "adam": dict(optimizer="adam", lr=0.01, steps=40, history_every=3),
    "gd": dict(optimizer="gd", lr=0.5, steps=40, history_per_decade=5, history_every=0),
}


@pytest.mark.parametrize("trained", [("W_Q", "W_K", "W_V"), ("W_Q", "W_K"), ("W_V",)])
@pytest.mark.parametrize("run_name", sorted(RUNS))
def test_training_run_gives_the_same_history(run_name, trained):
    """Every tracked series, the steps kept, the status and the final train/test numbers; frozen blocks stay at
    their init in both."""
    ds, p, model = random_problem(11 + len(trained))
    model = model.replace(trained=trained)
    cfg = TrainConfig(**RUNS[run_name])
    p_ref, h_ref = run(LiObjective(p, ds, model), cfg)
    p_fast, h_fast = run(SparseLiObjective(p, ds, model), cfg)
    assert_same_history(h_fast, h_ref, RUN_RTOL)
    for name, a, b, a0 in zip(LiParams._fields, p_fast, p_ref, p):
        assert rel_diff(a, b) <= RUN_RTOL, name
        assert np.array_equal(a, a0) == (name not in trained)          # frozen: untouched; trained: moved
    assert np.abs(np.diff(h_ref["train_loss"])).max() > 1e-6            # the run did train


def test_paper_size_signgd_run_is_the_same():
    """The benchmark's sizes (N = 20, d = 2000, m_k = m_v = 10, s = 40) with the default init σ₀ = 1e-3."""
    data, model = LiDataConfig(n_test=200), LiModelConfig()
    st = streams(0)
    ds = make_dataset(data, st.data, st.test)
    p = init_params(model, data.d, st.init)
    cfg = TrainConfig(optimizer="signgd", lr=1e-3, steps=30, eval_every=10)
    _, h_ref = train(p, ds, model, config=cfg.replace(backend="numpy"))
    _, h_fast = train(p, ds, model, config=cfg.replace(backend="numba"))
    assert_same_history(h_fast, h_ref, RUN_RTOL)


def test_backend_switch_picks_the_objective():
    ds, p, model = random_problem(0)
    dense, p_dense, model_dense = random_problem(0, "dense")
    assert type(make_objective(p, ds, model, "numpy")) is LiObjective
    assert type(make_objective(p, ds, model, "numba")) is SparseLiObjective
    assert type(make_objective(p, ds, model, "auto")) is (SparseLiObjective if numba_usable() else LiObjective)
    assert type(make_objective(p_dense, dense, model_dense, "auto")) is LiObjective      # dense noise: reference
    with pytest.raises(ValueError, match="sparse noise"):
        make_objective(p_dense, dense, model_dense, "numba")
    with pytest.raises(ValueError, match="backend must be"):
        make_objective(p, ds, model, "cuda")


def test_dense_noise_trains_through_the_reference():
    ds, p, model = random_problem(2, "dense")
    cfg = TrainConfig(optimizer="signgd", lr=0.02, steps=5)
    _, h_auto = train(p, ds, model, config=cfg)
    _, h_ref = run(LiObjective(p, ds, model), cfg)
    assert_same_history(h_auto, h_ref, 0.0)                             # the same objective: the same bits
