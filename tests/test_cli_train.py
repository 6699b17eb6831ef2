"""`refvit train OUT --setting S`: one cell of any setting, its history saved (columns of docs/usage.md) and drawn.
Its numbers are checked against independent computations: the loss at the initial weights from each setting's
model, the first setting's cell against the sweep run of the same cell, the tracked coefficients' start at zero."""
import math

import numpy as np
import pytest

from refvit import cli
from refvit.jiang2024 import model as jmodel
from refvit.jiang2024.config import figure1_setting
from refvit.jiang2024.experiment import draw_cell
from refvit.jiang2024.objective import HISTORY_KEYS as JIANG_KEYS
from refvit.jiang2024.sweep import Sweep, run_one
from refvit.li2025 import model as lmodel
from refvit.li2025.config import LiDataConfig, LiModelConfig
from refvit.li2025.data import make_dataset as li_dataset
from refvit.li2025.objective import HISTORY_KEYS as LI_KEYS
from refvit.magen2025.objective import HISTORY_KEYS as MAGEN_KEYS
from refvit.primitives import mean_loss
from refvit.results import load_history
from refvit.streams import cell_key, streams


def _train(tmp_path, *argv) -> tuple[dict, dict]:
    out = tmp_path / "cell"
    assert cli.main(["train", str(out), *argv]) == 0
    assert (out / "training.png").read_bytes()[:4] == b"\x89PNG"
    return load_history(out / "history.npz")


def test_the_first_settings_cell_is_the_sweeps_run_of_that_cell(tmp_path):
    summary, h = _train(tmp_path, "--N", "2", "--mu", "20", "--seed", "0")
    quick = Sweep.quick()                                     # the sweep run of (N=2, ‖μ‖=20, repeat 0)
    row = run_one(*quick.cell_configs(2, 20), quick.seed, 0)
    assert (summary["steps"], summary["status"]) == (row["steps"], row["status"])
    assert summary["test_loss"] == row["test_loss"] and summary["train_loss"] == row["train_loss"]
    assert {f"h_{k}" for k in JIANG_KEYS} <= set(h) and len(h["step"]) == summary["steps"] + 1
    # the loss at step 0 from the dense model at the initial weights (the run trained span coordinates)
    data, params0 = draw_cell(*figure1_setting(N=2, mu_norm=20.0)[:2], seed=0, key=cell_key(2, 20))
    f0 = jmodel.forward(params0, data.X)
    assert h["h_train_loss"][0] == pytest.approx(mean_loss(f0, data.y), rel=1e-12)   # two code paths: rounding only
    assert h["h_train_loss"][-1] == summary["train_loss"]
    # tracked coefficients: one row per call, zero at the start (W(t) = W(0) + Σ increments)
    assert len(h["c_step"]) == len(h["step"]) and h["c_y_rho"].shape == (len(h["step"]), 2)
    assert h["c_gamma_plus"][0] == 0 and h["c_gamma_minus"][0] == 0 and np.all(h["c_y_rho"][0] == 0)
    assert h["c_gamma_plus"][-1] > 0 > h["c_gamma_minus"][-1]      # the signal coefficients grow apart
    assert np.all(h["c_y_rho"][-1] > 0)           # GD grows each noise coefficient ρ_i with the sign of y_i


def test_the_second_settings_cell_starts_at_its_models_loss(tmp_path):
    summary, h = _train(tmp_path, "--setting", "li2025", "--steps", "3", "--seed", "2")
    assert {f"h_{k}" for k in LI_KEYS} <= set(h) and summary["steps"] == 3 and summary["optimizer"] == "gd"
    cfg, model = LiDataConfig(N=20, mu_norm=0.02), LiModelConfig()
    rng = streams(2, *cell_key(20, 0.02))
    data = li_dataset(cfg, rng.data, rng.test)
    params0 = lmodel.init_params(model, cfg.d, rng.init)
    f0 = lmodel.forward_cache(params0, data.X, model)[0]
    # the run took the sparse path, this is the dense reference: rounding only
    assert h["h_train_loss"][0] == pytest.approx(mean_loss(f0, data.y), rel=1e-12)


def test_the_third_settings_cell_starts_from_zero_at_log_2(tmp_path):
    summary, h = _train(tmp_path, "--setting", "magen2025", "--N", "10", "--optimizer", "gd")
    assert {f"h_{k}" for k in MAGEN_KEYS} <= set(h) and summary["steps"] == 2
    assert summary["lr"] == pytest.approx(0.002 * 10, rel=1e-15)     # η = η₀·n (docs/math.md (17.1))
    assert h["h_train_loss"][0] == pytest.approx(math.log(2), rel=1e-15)   # zero weights: f = 0, ℓ(0) = log 2


@pytest.mark.parametrize("argv, names", [
    (["--optimizer", "adam"], "coords"),                 # Adam leaves the token span: refused on span coordinates
    (["--N", "3"], "N"),                                   # odd N: the first setting's labels cannot balance
    (["--setting", "li2025", "--lr", "-1"], "lr"),
])
def test_a_bad_cell_is_one_line_status_2_and_nothing_written(tmp_path, capsys, argv, names):
    out = tmp_path / "never"
    assert cli.main(["train", str(out), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("refvit: error:") and len(err.splitlines()) == 1 and names in err, err
    assert not out.exists()


def test_the_figure_script_refuses_a_history_of_another_kind(tmp_path, capsys):
    from refvit.analysis import fig_train
    from refvit.results import save_history
    from refvit.trainer import History
    path = tmp_path / "other.npz"
    save_history(path, History(np.arange(2), {"train_loss": np.ones(2)}, "max_steps", 1, 1.0, 1.0, 0.0), {"x": 1})
    assert fig_train.main([str(path), "--out", str(tmp_path / "f.png")]) == 2
    assert "not a `refvit train` history" in capsys.readouterr().err and not (tmp_path / "f.png").exists()
