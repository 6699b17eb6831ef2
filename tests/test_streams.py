"""The random streams: each one reproduced here from its seed key alone, and each independent of the others.

``refvit.streams.streams(seed, *key)`` spawns three generators (data, test, init) from SeedSequence([seed, *key])
(docs/math.md §1.2). The draws of each are reproduced below from numpy alone, in the documented order: training
noise tokens, other tokens, then the label flips (data stream); the test set (test stream); W_Q, W_K, W_V, w_O
(init stream). Changing what one stream draws must leave the others bit-identical. All comparisons are exact:
the same generator states and the same arithmetic.
"""
import math

import numpy as np

from refvit.jiang2024.config import DataConfig, ModelConfig
from refvit.config import TrainConfig
from refvit.jiang2024.experiment import cell_key, draw_cell, run_cell
from refvit.fit import fit_boundary
from refvit.jiang2024.boundary import fit_columns
from refvit.io import read_columns, save_csv
from refvit.jiang2024.studies.optimizers import PILOT_STREAM_TAG
from refvit.jiang2024.sweep import run_one

from .problems import table_row

DATA = DataConfig(N=10, M=4, d=12, mu_norm=3.0, sigma_p=2.0, sigma_w=0.5, n_test=6, flip_rate=0.2)
MODEL = ModelConfig(d_h=3, d_v=2, init_scale=4.0)


def by_hand(cfg: DataConfig, model: ModelConfig, parts):
    """(X, y, X_test, y_test, params) drawn from SeedSequence(parts) without refvit (balanced labels, default signals)."""
    g_data, g_test, g_init = (np.random.default_rng(s) for s in np.random.SeedSequence(list(parts)).spawn(3))

    def images(n, g):
        y = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)        # balanced labels: no draw (math 1.5)
        X = np.zeros((n, cfg.M, cfg.d))
        X[y > 0, 0, 0] = cfg.mu_norm                          # μ₊ = ‖μ‖e₁, μ₋ = ‖μ‖e₂ (math 1.2)
        X[y < 0, 0, 1] = cfg.mu_norm
        X[:, 1] = cfg.sigma_p * g.standard_normal((n, cfg.d))                   # noise token (math 1.3)
        X[:, 2:] = cfg.sigma_w * g.standard_normal((n, cfg.M - 2, cfg.d))       # other tokens
        return X, y

    X, y = images(cfg.N, g_data)
    flipped = g_data.choice(cfg.N, size=round(cfg.flip_rate * cfg.N), replace=False)   # then flips, same stream
    y = y.copy()
    y[flipped] *= -1
    X_test, y_test = images(cfg.n_test, g_test)
    b = 1 / math.sqrt(cfg.d)
    W = [g_init.uniform(-b, b, size=(cfg.d, k)) / model.init_scale for k in (model.d_h, model.d_h, model.d_v)]
    w_O = g_init.uniform(-1 / math.sqrt(model.d_v), 1 / math.sqrt(model.d_v), size=model.d_v)
    return X, y, X_test, y_test, (*W, w_O)


def drawn(cfg, model, seed, key):
    data, p = draw_cell(cfg, model, seed, key)
    return data.X, data.y, data.X_test, data.y_test, tuple(p)


def assert_same(a, b):
    """Bit-identical arrays, element by element of (nested) tuples."""
    assert len(a) == len(b)
    for x, z in zip(a, b):
        if isinstance(x, tuple):
            assert_same(x, z)
        else:
            np.testing.assert_array_equal(x, z)


def test_every_stream_is_reproduced_from_its_key():
    key = cell_key(DATA.N, DATA.mu_norm, 3)
    got, want = drawn(DATA, MODEL, 5, key), by_hand(DATA, MODEL, (5, *key))
    for x, z in zip(got[:4], want[:4]):
        np.testing.assert_array_equal(x, z)
    assert_same(got[4], want[4])
    assert np.sum(got[1] != np.where(np.arange(10) % 2 == 0, 1.0, -1.0)) == 2   # round(0.2·10) flips


def test_changing_one_stream_leaves_the_others_bit_identical():
    key = (10, 3, 0)
    base = drawn(DATA, MODEL, 0, key)
    # label flips (data stream, drawn last): the test set and the init do not move, nor the training images
    noflip = drawn(DATA.replace(flip_rate=0.0), MODEL, 0, key)
    np.testing.assert_array_equal(noflip[0], base[0])
    np.testing.assert_array_equal(noflip[2], base[2])
    assert_same(noflip[4], base[4])
    assert not np.array_equal(noflip[1], base[1])
    # the size of the test set (test stream): training data and init unchanged
    more_test = drawn(DATA.replace(n_test=8), MODEL, 0, key)
    np.testing.assert_array_equal(more_test[0], base[0])
    np.testing.assert_array_equal(more_test[1], base[1])
    np.testing.assert_array_equal(more_test[2][:6, 1], base[2][:, 1])   # the first 6 noise tokens: the same draws
    assert_same(more_test[4], base[4])
    # the init (init stream): data and test set unchanged
    other_init = drawn(DATA, MODEL.replace(d_h=5), 0, key)
    for i in range(4):
        np.testing.assert_array_equal(other_init[i], base[i])
    # the training-set size (data stream): test set and init unchanged
    bigger = drawn(DATA.replace(N=20), MODEL, 0, key)
    np.testing.assert_array_equal(bigger[2], base[2])
    assert_same(bigger[4], base[4])


def test_pilot_streams_are_their_own_and_reported_by_the_sweep():
    assert PILOT_STREAM_TAG == (1,)
    N, mu, r = DATA.N, DATA.mu_norm, 1
    key = cell_key(N, mu, r)
    tagged = drawn(DATA, MODEL, 0, key + PILOT_STREAM_TAG)
    assert_same(tagged, by_hand(DATA, MODEL, (0, *key, 1)))
    untagged = drawn(DATA, MODEL, 0, key)
    assert not np.array_equal(tagged[0], untagged[0]) and not np.array_equal(tagged[4][0], untagged[4][0])
    # a tagged sweep run draws the tagged streams: its row is the tagged cell's
    train = TrainConfig(lr=0.2, steps=3, backend="numpy")
    row = run_one(DATA, MODEL, train, 0, r, stream_tag=PILOT_STREAM_TAG)
    alone = run_cell(DATA, MODEL, train, seed=0, key=key + PILOT_STREAM_TAG).summary
    assert (row["train_loss"], row["test_loss"]) == (alone["train_loss"], alone["test_loss"])
    plain = run_cell(DATA, MODEL, train, seed=0, key=key).summary
    assert row["test_loss"] != plain["test_loss"]


def test_the_fit_bootstrap_draws_from_its_own_stream(tmp_path):
    rng = np.random.default_rng(3)
    n = 80
    N = rng.choice([2, 4, 8, 16], size=n)
    snr = rng.choice([0.1, 0.2, 0.4, 0.8], size=n)
    loss = np.where(rng.random(n) < 1 / (1 + np.exp(-(1 + np.log(N) + 2 * np.log(snr)))), 0.05, 0.5)
    rows = [table_row(N=int(N[i]), snr=float(snr[i]), test_loss=float(loss[i])) for i in range(n)]
    save_csv(tmp_path / "table.csv", rows, list(rows[0]))
    t = read_columns(tmp_path / "table.csv")
    fits = [fit_columns(t, {"sigma_p": 4.0, "snr_axis_sigma": 0.2, "d": 100}, n_boot=30, seed=s) for s in (0, 1)]
    # the bootstrap stream is SeedSequence([seed, 0xF17]): two entries, never a run stream (seed plus ≥ 3 keys)
    for s, fit in zip((0, 1), fits):
        again = fit_boundary(N, snr, loss < 0.2, np.random.default_rng([s, 0xF17]), n_boot=30, sigma_ratio=20.0)
        assert fit["ci_a"] == again["ci_a"] and fit["ci_C"] == again["ci_C"]
    assert fits[0]["a"] == fits[1]["a"] and fits[0]["ci_a"] != fits[1]["ci_a"]   # the seed moves only the intervals


def test_cell_keys_of_distinct_cells_never_collide():
    """An integer ‖μ‖ is its own key; any other is keyed by round(‖μ‖·10⁶) with a trailing tag 1 (the documented
    resolution is 10⁻⁶: values closer than that are one cell)."""
    assert cell_key(20, 30, 2) == cell_key(20, 30.0, 2) == (20, 30, 2)
    assert cell_key(20, 30.5, 2) == (20, 30_500_000, 2, 1)
    assert cell_key(20, 0.25, 0) == (20, 250_000, 0, 1)
    assert cell_key(20, 3e-5, 2) == (20, 30, 2, 1) != cell_key(20, 30, 2)    # the tag keeps it off the integer 30
    mus = [1, 2, 30, 31, 0.5, 1.5, 2.5, 30.5, 30.25, 30.75, 30.000001, 29.999999, 1e-6, 2e-6, 3e-5, 1e6, 1e6 + 0.5]
    cells = [(N, mu, r) for N in (2, 3) for mu in mus for r in (0, 1)]
    keys = [cell_key(*c) for c in cells]
    assert len(set(keys)) == len(cells)
    assert all(all(isinstance(k, int) for k in key) for key in keys)       # SeedSequence takes whole numbers
