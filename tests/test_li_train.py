"""The second setting through the shared trainer (refvit.li2025.train): SignGD, Adam and GD against plain loops
written here from their update rules, frozen blocks, the recorded history against the weights, bad input."""
import numpy as np
import pytest

from refvit.li2025 import LiDataConfig, LiModelConfig, init_params, loss_and_grads, make_dataset, train
from refvit.li2025.model import forward
from refvit.primitives import mean_loss
from refvit.streams import streams


def problem(**model):
    dc = LiDataConfig(N=6, d=40, s=4, n_test=30, mu_norm=2.0, signal_position="random")
    mc = LiModelConfig(m_k=3, m_v=2, sigma0=0.3, **model)     # O(1) logits: the softmax is far from uniform
    rng = streams(3, 7)
    data = make_dataset(dc, rng.data, rng.test)
    return data, mc, init_params(mc, dc.d, rng.init)


def plain_loop(p, data, mc, steps, update):
    p = [a.copy() for a in p]
    state = [None] * 3
    for t in range(steps):
        _, g = loss_and_grads(p, data.X, data.y, mc)
        for k in range(3):
            if ("W_Q", "W_K", "W_V")[k] in mc.trained:
                p[k], state[k] = update(p[k], g[k], state[k], t)
    return p


def sign_update(w, g, _, t, lr=1e-2):
    return w - lr * np.sign(g), None


def adam_update(w, g, st, t, lr=1e-2, b1=0.9, b2=0.999, eps=1e-8):
    m, v = st if st is not None else (np.zeros_like(w), np.zeros_like(w))
    m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
    return w - lr * (m / (1 - b1 ** (t + 1))) / (np.sqrt(v / (1 - b2 ** (t + 1))) + eps), (m, v)


def gd_update(w, g, _, t, lr=0.5):
    return w - lr * g, None


@pytest.mark.parametrize("optimizer, lr, update", [("signgd", 1e-2, sign_update), ("adam", 1e-2, adam_update),
                                                   ("gd", 0.5, gd_update)])
def test_the_trainer_follows_the_update_rule(optimizer, lr, update):
    data, mc, p0 = problem()
    p, h = train(p0, data, mc, optimizer=optimizer, lr=lr, steps=12, backend="numpy")
    ref = plain_loop(p0, data, mc, 12, update)
    for a, b in zip(p, ref):
        # 1e-13 relative: the same float64 operations in the same order, up to how numpy fuses a - lr*x
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)
    assert h.steps == 12 and h.status == "max_steps" and len(h.step) == 13


def test_frozen_blocks_stay_at_their_init():
    data, mc, p0 = problem(trained=("W_Q", "W_K"))
    p, _ = train(p0, data, mc, optimizer="signgd", lr=1e-2, steps=5, backend="numpy")
    np.testing.assert_array_equal(p.W_V, p0.W_V)
    assert not np.array_equal(p.W_Q, p0.W_Q) and not np.array_equal(p.W_K, p0.W_K)


def test_the_last_history_row_is_read_from_the_final_weights():
    """Query noise ⟨w_{Q,s}, y_i ξ_i⟩, value noise ⟨v, y_i ξ_i⟩ and the losses, from the returned weights directly."""
    data, mc, p0 = problem()
    p, h = train(p0, data, mc, optimizer="signgd", lr=1e-2, steps=7, backend="numpy", history_every=0,
                 history_per_decade=3)
    noise = data.X[np.arange(6), 1 - data.signal_pos]                   # (N, d) the noise tokens ξ_i
    v = p.W_V[0].mean(axis=0) - p.W_V[1].mean(axis=0)
    # 1e-12 relative: products of the same vectors in another order
    np.testing.assert_allclose(h["query_noise"][-1], (noise @ p.W_Q.T * data.y[:, None]).T, rtol=1e-12)
    np.testing.assert_allclose(h["value_noise"][-1], noise @ v * data.y, rtol=1e-12)
    f = forward(p, data.X, mc)
    assert h["train_loss"][-1] == pytest.approx(mean_loss(f, data.y), rel=1e-13)
    assert h["train_error"][-1] == np.mean(np.sign(f) != data.y)
    assert h["test_loss"][-1] == pytest.approx(mean_loss(forward(p, data.X_test, mc), data.y_test), rel=1e-13)
    assert h.step.tolist() == [0, 1, 2, 5, 7]                           # log_steps(7, 3) and the last step


@pytest.mark.parametrize("call, match", [
    (lambda d, m, p: train(p, d.X, m, lr=1.0, steps=1), "data must be a LiDataset"),
    (lambda d, m, p: train(p, d, m, steps=1), "needs lr"),
    (lambda d, m, p: train(p, d, m, lr=1.0, steps=1, coords="span"), "dense weights only"),
    (lambda d, m, p: train(p[:2], d, m, lr=1.0, steps=1), "params must be"),
    (lambda d, m, p: train(p, d, LiModelConfig(m_k=4, m_v=2), lr=1.0, steps=1), "W_Q has 3 rows"),
])
def test_bad_input_is_refused_in_one_line(call, match):
    data, mc, p0 = problem()
    with pytest.raises(ValueError, match=match):
        call(data, mc, p0)


def test_the_example_runs_and_the_docs_show_it_verbatim(capsys):
    """examples/li2025_signgd.py exits 0 and prints its stages; docs/li2025.md shows the file as it is."""
    from .test_examples import ROOT, fenced_blocks, load_example
    assert load_example("li2025_signgd").main() == 0
    out = capsys.readouterr().out
    assert "SignGD, 900 steps" in out and "'t1': (2, False)" in out   # value noise linear from the first steps
    text = (ROOT / "examples" / "li2025_signgd.py").read_text(encoding="utf-8")
    assert text in fenced_blocks((ROOT / "docs" / "li2025.md").read_text(encoding="utf-8"))
