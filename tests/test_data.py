"""The data model of docs/math.md §1.1, §1.2: exact structure, and statistics within stated sampling error."""
import numpy as np
import pytest

from refvit import DataConfig, ModelConfig, init_params, make_dataset, sample, snr, streams
from refvit.jiang2024.data import flip_labels


def test_signal_token_and_balance():
    cfg = DataConfig(N=10, M=4, d=16, mu_norm=3.0, sigma_p=1.0, n_test=6)
    rng = streams(0)
    data = make_dataset(cfg, rng.data, rng.test)
    assert data.X.shape == (10, 4, 16) and data.X_test.shape == (6, 4, 16)
    np.testing.assert_array_equal(data.y, [1, -1] * 5)   # exactly balanced, alternating (authors' code)
    for X, y in ((data.X, data.y), (data.X_test, data.y_test)):
        np.testing.assert_array_equal(X[:, 0], np.where(y[:, None] > 0, data.mu_plus, data.mu_minus))
    assert data.mu_plus @ data.mu_minus == 0 and np.linalg.norm(data.mu_plus) == 3.0


def test_projected_noise_is_exactly_orthogonal_to_signals():
    cfg = DataConfig(N=8, M=5, d=32, mu_norm=2.0, project_noise=True, n_test=2)
    theta = 0.3   # a rotated orthogonal pair, not the coordinate axes
    mu_p = np.zeros(32); mu_p[[3, 7]] = 2.0 * np.array([np.cos(theta), np.sin(theta)])
    mu_m = np.zeros(32); mu_m[[3, 7]] = 2.0 * np.array([-np.sin(theta), np.cos(theta)])
    X, y = sample(cfg, 8, np.random.default_rng(1), signals=(mu_p, mu_m))
    noise = X[:, 1:].reshape(-1, 32)
    # Projection leaves rounding-level components: |⟨μ, ξ⟩| ≤ 1e-12·‖μ‖‖ξ‖ (observed ~1e-16).
    bound = 1e-12 * 2.0 * np.linalg.norm(noise, axis=1)
    assert np.all(np.abs(noise @ mu_p) <= bound) and np.all(np.abs(noise @ mu_m) <= bound)


@pytest.mark.parametrize("project", [False, True])
def test_noise_variances(project):
    cfg = DataConfig(N=200, M=4, d=200, mu_norm=1.0, sigma_p=3.0, sigma_w=0.15, project_noise=project, n_test=2)
    X, _ = sample(cfg, 200, np.random.default_rng(2))
    # Per-coordinate variance is σ² except on the 2 projected-out coordinates. With n·d ≈ 4e4 draws the variance
    # estimate has relative std √(2/(n·d)) ≈ 0.7%; 5% is about 7 standard errors.
    keep = slice(2, None) if project else slice(None)
    assert abs(X[:, 1, keep].var() / 9.0 - 1) < 0.05
    assert abs(X[:, 2:, keep].var() / 0.15**2 - 1) < 0.05
    if project:
        assert np.abs(X[:, 1:, :2]).max() < 1e-12   # e₁, e₂ components removed (rounding level)


def test_zero_other_tokens_and_rademacher_labels():
    cfg = DataConfig(N=2000, M=4, d=8, other_tokens="zero", labels="rademacher", n_test=2)
    X, y = sample(cfg, 2000, np.random.default_rng(3))
    assert not X[:, 2:].any()
    # Mean of 2000 Rademacher draws has std 1/√2000 ≈ 0.022; 0.11 is 5 standard errors.
    assert set(np.unique(y)) == {-1.0, 1.0} and abs(y.mean()) < 0.11


def test_flip_rate_flips_the_requested_fraction_of_training_labels_only():
    cfg = DataConfig(N=40, M=3, d=8, flip_rate=0.2, n_test=10)
    rng = streams(4)
    data = make_dataset(cfg, rng.data, rng.test)
    assert np.sum(data.y != data.y_clean) == 8                       # exactly round(0.2·40)
    np.testing.assert_array_equal(data.X[:, 0], np.where(data.y_clean[:, None] > 0, data.mu_plus, data.mu_minus))
    np.testing.assert_array_equal(data.y_test, [1, -1] * 5)          # test labels stay clean
    assert np.sum(flip_labels(np.ones(7), 0.3, np.random.default_rng(0)) < 0) == 2   # round(2.1)


def test_one_generator_for_training_and_test_sets_gives_the_same_data_every_time():
    """The training and test sets are drawn at the same time from their own streams; from one shared generator they
    must be drawn one after the other, in the order train, labels, test, or a seed would not fix the data."""
    cfg = DataConfig(N=6, M=4, d=32, n_test=8, flip_rate=0.2)
    rng = np.random.default_rng(5)
    a = make_dataset(cfg, rng, rng)
    rng = np.random.default_rng(5)
    b = make_dataset(cfg, rng, rng)
    for x, z in zip(a, b):
        np.testing.assert_array_equal(x, z)
    rng = np.random.default_rng(5)                     # the order of draws, by hand
    X, y_clean = sample(cfg, cfg.N, rng)
    y = flip_labels(y_clean, cfg.flip_rate, rng)
    X_test, y_test = sample(cfg, cfg.n_test, rng)
    for x, z in zip((X, y, X_test, y_test), (a.X, a.y, a.X_test, a.y_test)):
        np.testing.assert_array_equal(x, z)


def test_streams_are_independent_and_reproducible():
    cfg = DataConfig(N=4, M=3, d=8, n_test=2)
    a, b = streams(7, 4, 80), streams(7, 4, 80)
    d1, d2 = make_dataset(cfg, a.data, a.test), make_dataset(cfg, b.data, b.test)
    np.testing.assert_array_equal(d1.X, d2.X)
    # Changing the init scale (init stream) cannot change the data: the data was drawn from its own stream.
    p1 = init_params(ModelConfig(d_h=4, d_v=4, init_scale=16.0), 8, a.init)
    p2 = init_params(ModelConfig(d_h=4, d_v=4, init_scale=32.0), 8, b.init)
    np.testing.assert_allclose(p1.W_Q, 2 * p2.W_Q, rtol=1e-15)
    assert not np.array_equal(make_dataset(cfg, *streams(7, 4, 81)[:2]).X, d1.X)


def test_snr_conventions():
    cfg = DataConfig(N=10, M=16, d=1024, mu_norm=64.0, sigma_p=4.0, sigma_w=0.2)
    assert cfg.snr == 64.0 / (4.0 * 32.0)                  # σ_p of the noise token (math 1.6)
    assert cfg.snr_axis == 64.0 / (0.2 * 32.0) == 10.0   # the authors' axis: 64/6.4
    assert snr(64.0, 0.2, 1024) == cfg.snr_axis
    # The authors' curve N·SNR_axis² = 1000 is N·SNR² = 2.5 in the noise-token convention.
    assert abs(cfg.N * cfg.snr_axis ** 2 / (cfg.N * cfg.snr**2) - 400) < 1e-9


def test_init_scales():
    p = init_params(ModelConfig(d_h=64, d_v=32, init_scale=16.0), 256, np.random.default_rng(0))
    assert np.abs(p.W_Q).max() <= 1 / 16 / 16 and np.abs(p.w_O).max() <= 1 / np.sqrt(32)
    # U(±b)/16 has variance b²/3/16²; with 8192 draws the estimate's relative std is ~1%, so 6% is ~6 std errors.
    assert abs(p.W_V.var() / ((1 / 256) / 3 / 16**2) - 1) < 0.06
    g = init_params(ModelConfig(d_h=64, d_v=32, init="gaussian", sigma0=0.01), 256, np.random.default_rng(0))
    assert abs(g.W_K.std() / 0.01 - 1) < 0.03


@pytest.mark.parametrize("variant", [{}, {"other_tokens": "zero"}, {"project_noise": True}, {"M": 2}])
def test_draws_follow_the_bulk_draw_order_to_the_bit(variant):
    """``sample`` draws into X block by block; the numbers are those of one (n, d) draw of the noise tokens, then
    one (n, M − 2, d) draw of the other tokens, scaled (docs/math.md (1.3)), and the generator ends in the same state.
    The reference is written here with the bulk draws."""
    cfg = DataConfig(N=6, M=5, d=12, mu_norm=2.0, sigma_p=1.5, sigma_w=0.2, n_test=2).replace(**variant)
    X, y = sample(cfg, 6, np.random.default_rng(3))
    rng = np.random.default_rng(3)
    y_ref = np.where(np.arange(6) % 2 == 0, 1.0, -1.0)
    X_ref = np.zeros((6, cfg.M, 12))
    X_ref[:, 0, 0] = np.where(y_ref > 0, 2.0, 0.0)
    X_ref[:, 0, 1] = np.where(y_ref > 0, 0.0, 2.0)
    X_ref[:, 1] = rng.standard_normal((6, 12)) * 1.5
    if cfg.M > 2 and cfg.other_tokens == "weak_gaussian":
        X_ref[:, 2:] = rng.standard_normal((6, cfg.M - 2, 12)) * 0.2
    if cfg.project_noise:   # Π x: the μ₊ = 2e₁, μ₋ = 2e₂ components removed, exactly zero here
        X_ref[:, 1:, :2] = 0.0
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(X, X_ref)
    assert np.random.default_rng(3).bit_generator.state != rng.bit_generator.state   # the reference did draw
    sample(cfg, 6, gen := np.random.default_rng(3))
    assert gen.bit_generator.state == rng.bit_generator.state
