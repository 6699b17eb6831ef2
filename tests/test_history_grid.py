"""The trainer's log-spaced history (refvit.trainer.log_steps, TrainConfig.history_per_decade): the grid by hand,
bounded memory, and a run that keeps exactly the grid's rows of the every-step trajectory."""
import numpy as np
import pytest

from refvit import figure1_setting, init_params, make_dataset, streams, train
from refvit.config import TrainConfig
from refvit.trainer import log_steps


def test_log_steps_by_hand():
    # 10^(j/4), j = 0..8: 1, 1.78, 3.16, 5.62, 10, 17.8, 31.6, 56.2, 100, rounded, with 0, 1, 2 and T added
    assert log_steps(100, 4).tolist() == [0, 1, 2, 3, 6, 10, 18, 32, 56, 100]
    # T = 150 is not on the grid (10^(9/4) = 178 > 150): it is added as the last step
    assert log_steps(150, 4).tolist() == [0, 1, 2, 3, 6, 10, 18, 32, 56, 100, 150]
    assert log_steps(0, 3).tolist() == [0] and log_steps(1, 3).tolist() == [0, 1] and log_steps(2, 1).tolist() == [0, 1, 2]
    # every step for a fine grid: 10^(j/100) steps by less than 1 up to t ≈ 43
    assert log_steps(40, 100).tolist() == list(range(41))
    for T, k in [(900, 10), (10 ** 6, 5), (7, 2)]:
        s = log_steps(T, k)
        assert s[0] == 0 and s[-1] == T and {0, 1, 2} <= set(s.tolist()) and np.all(np.diff(s) > 0)
        assert len(s) <= k * np.log10(T) + 4          # bounded memory: O(log T) rows
    for bad in (dict(T=-1, per_decade=3), dict(T=10, per_decade=0), dict(T=1.5, per_decade=3)):
        with pytest.raises(ValueError, match="T must be|per_decade must be"):
            log_steps(**bad)


def test_a_log_spaced_history_keeps_exactly_the_grid():
    """TrainConfig(history_every=0, history_per_decade=k) keeps the rows of log_steps(steps, k) and no other; with
    history_every=5 as well, the union of both grids. The kept rows hold the values of an every-step run."""
    data_cfg, model_cfg, _ = figure1_setting(N=4, mu_norm=40.0)
    data_cfg, model_cfg = data_cfg.replace(d=64, M=3, n_test=10), model_cfg.replace(d_h=8, d_v=8)
    rng = streams(0, 1)
    data = make_dataset(data_cfg, rng.data, rng.test)
    p0 = init_params(model_cfg, data_cfg.d, rng.init)
    full = train(p0, data.X, data.y, lr=0.1, steps=150, backend="numpy")[1]
    for every, expect in ((0, log_steps(150, 4)), (5, np.union1d(log_steps(150, 4), np.arange(0, 151, 5)))):
        h = train(p0, data.X, data.y, lr=0.1, steps=150, backend="numpy", history_every=every,
                  history_per_decade=4)[1]
        assert h.step.tolist() == expect.tolist()
        np.testing.assert_array_equal(h["train_loss"], full["train_loss"][expect])   # the same trajectory
    assert "history_per_decade" not in TrainConfig().to_dict()       # unset, it leaves stored settings unchanged
    assert TrainConfig(history_per_decade=4).to_dict()["history_per_decade"] == 4
