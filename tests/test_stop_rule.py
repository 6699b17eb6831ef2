"""The stopping rule against a literal transcription of the authors' Figure-1 epoch loop (docs/math.md (6.6)).

Their loop, per epoch: compute the training loss, backward, optimizer step, then the test loss of the *updated*
model, returned if the training loss computed before the step was below 0.01. The transcription below shares
only ``loss_and_grads`` and ``forward`` with refvit (checked on their own by the gradient tests), not the loop.
"""
import numpy as np
import pytest

from refvit import TrainConfig, figure1_setting, forward, loss_and_grads, train
from refvit.jiang2024.experiment import draw_cell
from refvit.jiang2024.model import mean_loss

CELLS = ((4, 20.0), (10, 60.0), (20, 80.0))     # harmful, near the boundary, benign (N, ‖μ‖)
WAYS = ({"coords": "dense", "backend": "numpy"}, {"coords": "dense", "backend": "numba"},
        {"coords": "span", "backend": "numpy"}, {"coords": "span", "backend": "numba"})


def authors_loop(params, X, y, X_test, y_test, lr, epochs, threshold):
    """(updates taken, reported test loss) of the authors' heatmap loop, w_O frozen."""
    W_Q, W_K, W_V, w_O = (np.array(a, copy=True) for a in params)
    for epoch in range(epochs):
        loss, g = loss_and_grads((W_Q, W_K, W_V, w_O), X, y)            # training loss, then backward
        W_Q, W_K, W_V = W_Q - lr * g.W_Q, W_K - lr * g.W_K, W_V - lr * g.W_V   # optimizer.step()
        test = mean_loss(forward((W_Q, W_K, W_V, w_O), X_test), y_test)   # on the updated model
        if loss < threshold:
            return epoch + 1, test
    return epochs, test


@pytest.mark.parametrize("N,mu", CELLS)
def test_default_figure1_trainer_is_the_authors_loop(N, mu):
    data_cfg, model_cfg, train_cfg = figure1_setting(N=N, mu_norm=mu)
    data, p0 = draw_cell(data_cfg, model_cfg, seed=0, key=(N, int(mu), 0))
    steps, test = authors_loop(p0, data.X, data.y, data.X_test, data.y_test, train_cfg.lr, train_cfg.steps,
                               train_cfg.loss_threshold)
    assert steps < train_cfg.steps          # every cell stops early, so the rule is what is being compared
    for way in WAYS:
        _, hist = train(p0, data.X, data.y, X_test=data.X_test, y_test=data.y_test, config=train_cfg.replace(**way))
        assert hist.status == "converged" and hist.steps == steps, way
        # 1e-12: the same updates in another summation order (span coordinates, numba) over ≤ 30 steps; measured
        # ≤ 1e-14 relative, while one update more or less changes the test loss by ≥ 1e-3 relative here
        assert hist.final_test_loss == pytest.approx(test, rel=1e-12, abs=0), way


def test_first_below_stops_one_update_earlier_at_the_first_iterate_below():
    data_cfg, model_cfg, train_cfg = figure1_setting(N=20, mu_norm=80.0)
    data, p0 = draw_cell(data_cfg, model_cfg, seed=0, key=(20, 80, 0))
    _, authors = train(p0, data.X, data.y, X_test=data.X_test, y_test=data.y_test, config=train_cfg)
    _, first = train(p0, data.X, data.y, X_test=data.X_test, y_test=data.y_test,
                     config=train_cfg.replace(stop_rule="first_below"))
    assert first.steps == authors.steps - 1
    loss = first["train_loss"]                                   # one row per iterate, the last is returned
    assert loss[-1] < 0.01 <= loss[:-1].min() and first.final_train_loss == loss[-1]
    # both histories agree on every iterate they share (exact: the same arithmetic), the authors' has one more
    np.testing.assert_array_equal(authors["train_loss"][:-1], loss)
    assert authors["train_loss"][-1] < loss[-1] and authors.final_train_loss == authors["train_loss"][-1]


def test_a_loss_exactly_at_the_threshold_does_not_stop():
    """The check is strict (loss < threshold): an iterate whose loss equals the threshold is not below it."""
    data_cfg, model_cfg, train_cfg = figure1_setting(N=4, mu_norm=20.0)
    data, p0 = draw_cell(data_cfg, model_cfg, seed=0, key=(4, 20, 0))
    loss0 = loss_and_grads(p0, data.X, data.y)[0]
    at, above = train_cfg.replace(loss_threshold=loss0, steps=1), train_cfg.replace(loss_threshold=np.nextafter(loss0, 1.0), steps=1)
    # first_below: iterate 0 equals the threshold, so it is updated; iterate 1 (lower loss) is the first below
    assert [train(p0, data.X, data.y, config=c.replace(stop_rule="first_below"))[1].steps for c in (at, above)] == [1, 0]
    # authors: at the threshold the only check fails (1 update, budget spent); one ulp above it passes, then updates
    runs = [train(p0, data.X, data.y, config=c)[1] for c in (at, above)]
    assert [(h.status, h.steps) for h in runs] == [("max_steps", 1), ("converged", 1)]


def test_stop_rule_choices_are_checked():
    with pytest.raises(ValueError, match="unknown stop_rule 'after'.*'authors', 'first_below'"):
        TrainConfig(lr=0.1, steps=3, loss_threshold=0.01, stop_rule="after")
    with pytest.raises(ValueError, match="loss_threshold is None"):
        TrainConfig(lr=0.1, steps=3, stop_rule="first_below")
