"""The optimizer and label-noise studies: the learning-rate rule on stubs with known answers, a tiny study end to
end, its tables against
direct recomputation from the saved runs, resuming, and the figure scripts on its saved results.

(SignGD = −η·sign(∇), Adam against a hand-written recursion and the exact flip count are tested in test_train.py
and test_data.py; here we check that the studies actually use them.)
"""
import json
import math
import re
import statistics
from pathlib import Path

import numpy as np
import pytest

from refvit.analysis import fig_labelnoise, fig_optimizers
from refvit.jiang2024.config import DataConfig, ModelConfig
from refvit.config import TrainConfig
from refvit.jiang2024.experiment import run_cell
from refvit.io import load_json, read_columns, read_columns as load_table, read_csv
from refvit.pipelines import draw_study as draw
from refvit.jiang2024.studies import (PILOT_STREAM_TAG, LabelNoiseStudy, OptimizerStudy, Setting, choose_lr, p_folder,
                                      regime_of, run_label_noise, run_optimizers)


# --- the rule on stubs ---------------------------------------------------------------------------------------------

def stub(feasible, heldout, calls):
    """evaluate(lr) for choose_lr: two pilot rows, both converged iff feasible(lr); held-out loss heldout(lr)."""
    def evaluate(lr):
        calls.append(lr)
        status = "converged" if feasible(lr) else "max_steps"
        return [{"status": status, "test_loss": heldout(lr) - 0.1}, {"status": status, "test_loss": heldout(lr) + 0.1}]
    return evaluate


GRID = (1e-4, 1.0, 1e-2, 1e-1, 1e-3, 1e-5)      # deliberately unsorted: the rule sorts it


def test_largest_stable_is_the_first_feasible_rate_from_the_top_and_the_scan_stops_there():
    calls = []
    # 1 and 0.1 fail ("diverge"); everything at or below 1e-2 converges
    c = choose_lr(GRID, stub(lambda lr: lr <= 0.011, lambda lr: 1.0, calls), "largest_stable")
    assert c["lr"] == c["largest_stable"] == 1e-2
    assert calls == [1.0, 0.1, 0.01]            # downward, and nothing below the chosen rate was run
    assert c["heldout"] is None                 # not decidable without scanning further


def test_heldout_picks_the_feasible_rate_with_the_lowest_mean_heldout_loss():
    calls = []
    # held-out loss (log10 η + 2.3)²: by hand 1.69 (0.1), 0.09 (0.01), 0.49 (1e-3); 1 and 1e-4 infeasible
    loss = lambda lr: (math.log10(lr) + 2.3) ** 2         # noqa: E731
    c = choose_lr(GRID, stub(lambda lr: 5e-4 < lr < 0.5, loss, calls), "heldout")
    assert c["lr"] == c["heldout"] == 1e-2 and c["largest_stable"] == 0.1
    assert calls == [1.0, 0.1, 0.01, 1e-3, 1e-4]   # stops at the first infeasible rate after a feasible one
    by_lr = {s["lr"]: s for s in c["scanned"]}
    assert by_lr[1e-3]["heldout_loss"] == pytest.approx(0.49, rel=1e-12)   # mean of 0.39 and 0.59, two roundings
    assert not by_lr[1.0]["feasible"] and math.isnan(by_lr[1.0]["heldout_loss"])


def test_heldout_ties_go_to_the_larger_rate_and_a_grid_without_feasible_rate_is_an_error():
    c = choose_lr((0.1, 0.01, 0.001), stub(lambda lr: True, lambda lr: 0.5, []), "heldout")
    assert c["lr"] == 0.1
    with pytest.raises(ValueError, match="extend the grid downward"):
        choose_lr((0.1, 0.01), stub(lambda lr: False, lambda lr: 0.5, []), "heldout")
    with pytest.raises(ValueError, match="unknown lr rule"):
        choose_lr((0.1,), stub(lambda lr: True, lambda lr: 0.5, []), "smallest")


def test_a_partly_converged_rate_is_infeasible():
    def evaluate(lr):
        return [{"status": "converged", "test_loss": 0.1}, {"status": "diverged" if lr > 0.05 else "converged",
                                                            "test_loss": 0.1}]
    assert choose_lr((1.0, 0.1, 0.01), evaluate, "largest_stable")["lr"] == 0.01


def test_regime_groups():
    assert regime_of(5.0) == "benign" and regime_of(4.99) == "transition"
    assert regime_of(1.25) == "harmful" and regime_of(1.26) == "transition"
    assert regime_of(2.6, factor=1.0) == "benign"


# --- a tiny study end to end -------------------------------------------------------------------------------------

DATA = DataConfig(N=2, M=3, d=64, sigma_p=1.0, sigma_w=0.05, n_test=20)
MODEL = ModelConfig(d_h=8, d_v=8, init_scale=1.0)
TRAIN = TrainConfig(lr=1.0, steps=200, loss_threshold=0.01, backend="numpy")


def tiny_optimizer_study(lr_rule="heldout"):
    s1 = Setting("figure1", DATA, MODEL, TRAIN, (2, 4, 8), (1, 4, 16), 1, (4,), (1, 16), 2,
                 references=(("gd", 0.5),))
    s2 = Setting("dynamics", DATA.replace(N=4), MODEL, TRAIN, (4,), (1, 8), 2, (4,), (1, 8), 1,
                 (("harmful", 1), ("benign", 8)), 2, 20, 2, curve_optimizers=("gd", "signgd"),
                 references=(("gd", 0.5),), reference_curve_steps=30)
    return OptimizerStudy("tiny", (s1, s2), (1.0, 0.1, 0.01), lr_rule=lr_rule)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    run_optimizers(tiny_optimizer_study(), root / "study_optimizers_tiny", workers=0, progress=False)
    # benign_factor 4, not the default 2: the cell N·SNR² = 1 is then "transition", not "harmful"
    ln = LabelNoiseStudy("tiny", (0.0, 0.25), (4, 8), (1, 4, 16), 2, benign_factor=4.0, data=DATA, model=MODEL,
                         train=TRAIN)
    run_label_noise(ln, root / "study_labelnoise_tiny", workers=0, progress=False)
    return root


def test_chosen_rate_follows_from_the_saved_pilots(results):
    d = results / "study_optimizers_tiny"
    for setting in ("figure1", "dynamics"):
        choice = load_json(d / setting / "lr_choice.json")
        for opt in ("gd", "signgd", "adam"):
            # recompute the rule directly from the pilot sweep tables on disk
            best = None
            for lr in (1.0, 0.1, 0.01):
                path = d / setting / "pilot" / f"{opt}_lr{lr:g}" / "table.csv"
                if not path.exists():
                    break                      # the scan stopped before this rate
                t = load_table(path)
                if t["converged"].all():
                    m = t["test_loss"].mean()
                    if best is None or m < best[1]:
                        best = (lr, m)
            assert choice[opt]["lr"] == best[0], (setting, opt)
            meta = load_json(d / setting / "pilot" / f"{opt}_lr{choice[opt]['lr']:g}" / "sweep.json")
            assert meta["stream_tag"] == list(PILOT_STREAM_TAG)  # pilot streams are not the reported ones
            cmp = load_json(d / setting / opt / "sweep.json")
            assert cmp["seed"] == 0 and cmp["train"]["optimizer"] == opt and cmp["train"]["lr"] == choice[opt]["lr"]
            assert cmp["train"]["coords"] == ("span" if opt == "gd" else "dense")


def test_a_comparison_row_is_the_cell_run_alone_with_that_optimizer(results):
    d = results / "study_optimizers_tiny"
    lr = load_json(d / "figure1" / "lr_choice.json")["signgd"]["lr"]
    row = next(r for r in read_csv(d / "table.csv") if r["setting"] == "figure1" and r["series"] == "signgd"
               and r["N"] == 4 and r["mu_norm"] == 16)
    alone = run_cell(DATA.replace(N=4, mu_norm=16.0), MODEL,
                     TRAIN.replace(optimizer="signgd", lr=lr, backend="auto"), seed=0, key=(4, 16, 0)).summary
    for k in ("steps", "status", "test_error"):
        assert row[k] == alone[k], k
    # the CSV stores repr(float): exact round trip
    assert row["test_loss"] == alone["test_loss"] and row["train_loss"] == alone["train_loss"]


def test_summary_equals_a_direct_aggregation_of_the_sweep_tables(results):
    d = results / "study_optimizers_tiny"
    summary = read_csv(d / "summary.csv")
    t = load_table(d / "figure1" / "gd" / "table.csv")
    n_snr2 = t["N"] * t["mu_norm"] ** 2 / (1.0 * 64)        # N‖μ‖²/(σ_p² d) by hand
    for group, sel in (("benign", n_snr2 >= 5.0), ("harmful", n_snr2 <= 1.25)):
        row = next(r for r in summary if r["setting"] == "figure1" and r["series"] == "gd" and r["group"] == group)
        ok = sel & t["converged"]
        assert row["n_runs"] == sel.sum() and row["n_converged"] == ok.sum()
        # same numbers, same order of summation: 1e-15 relative leaves room for one rounding only
        assert row["test_loss_mean"] == pytest.approx(t["test_loss"][ok].mean(), rel=1e-15)
        assert row["steps_median"] == np.median(t["steps"][ok])
    # dynamics setting: groups are the named regimes; the reference is a series of its own, never chosen by the rule
    groups = {(r["series"], r["group"]) for r in summary if r["setting"] == "dynamics"}
    assert groups == {(o, g) for o in ("gd", "signgd", "adam", "gd@0.5") for g in ("harmful", "benign")}
    ref = load_json(d / "dynamics" / "ref_gd_lr0.5_curves" / "dynamics.json")
    assert ref["train"]["lr"] == 0.5 and ref["train"]["steps"] == 30 and ref["train"]["loss_threshold"] is None


def test_label_noise_runs_trained_on_flipped_labels(results):
    d = results / "study_labelnoise_tiny"
    rows = read_csv(d / "table.csv")
    assert {r["n_flipped"] for r in rows if r["flip_rate"] == 0.25} == {1, 2}      # round(0.25·4), round(0.25·8)
    row = next(r for r in rows if r["flip_rate"] == 0.25 and r["N"] == 8 and r["mu_norm"] == 4 and r["repeat"] == 1)
    cfg = DATA.replace(N=8, mu_norm=4.0, flip_rate=0.25)
    run = run_cell(cfg, MODEL, TRAIN.replace(coords="span"), seed=0, key=(8, 4, 1))
    assert np.sum(run.data.y != run.data.y_clean) == 2
    assert row["test_error"] == run.summary["test_error"] and row["test_loss"] == run.summary["test_loss"]
    # the clean run of the same cell differs (same streams, labels unflipped), so the flips reached the trainer
    clean = next(r for r in rows if r["flip_rate"] == 0.0 and r["N"] == 8 and r["mu_norm"] == 4 and r["repeat"] == 1)
    assert clean["train_loss"] != row["train_loss"]


def test_resume_computes_nothing_and_other_settings_are_refused(results, tmp_path):
    d = results / "study_optimizers_tiny"
    files = [p for p in d.rglob("*.json") if p.parent.name == "runs"] + list(d.rglob("*.npz"))   # one per run
    assert len(files) > 50
    before = {p: p.stat().st_mtime_ns for p in files}
    run_optimizers(tiny_optimizer_study(), d, workers=0, progress=False)
    assert {p: p.stat().st_mtime_ns for p in files} == before
    with pytest.raises(ValueError, match="different settings"):
        run_optimizers(tiny_optimizer_study("largest_stable"), d, workers=0, progress=False)


def _is_png(path):
    return path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_figure_scripts_run_on_the_saved_results(results, tmp_path):
    pngs = draw("optimizers", "optimizers_tiny", results, tmp_path) + \
        draw("label-noise", "labelnoise_tiny", results, tmp_path)
    assert len(pngs) == 3 and all(_is_png(p) for p in pngs)


def by_hand_group(r) -> str:
    """The regime of a run of the tiny label-noise study (benign_factor 4), from N‖μ‖²/(σ_p² d) by hand."""
    n_snr2 = r["N"] * r["mu_norm"] ** 2 / 64
    return "benign" if n_snr2 >= 4 * 2.5 else "harmful" if n_snr2 <= 2.5 / 4 else "transition"


def test_label_noise_groups_use_the_studys_benign_factor(results):
    d = results / "study_labelnoise_tiny"
    assert load_json(d / "study.json")["benign_factor"] == 4.0
    rows = read_csv(d / "table.csv")
    assert [r["group"] for r in rows] == [by_hand_group(r) for r in rows]
    assert {r["N"] * r["mu_norm"] ** 2 / 64 for r in rows if r["group"] == "transition"} == {1.0, 2.0}
    summary = read_csv(d / "summary.csv")
    for row in summary:
        g = [r for r in rows if r["flip_rate"] == row["flip_rate"] and by_hand_group(r) == row["group"]]
        assert row["n_runs"] == len(g) and row["n_converged"] == sum(r["converged"] for r in g)
    assert {(r["flip_rate"], r["group"]) for r in summary} == {(p, g) for p in (0.0, 0.25)
                                                               for g in ("benign", "transition", "harmful")}


@pytest.mark.parametrize("group", ["benign", "transition"])
def test_label_noise_error_vs_p_matches_the_table(results, group):
    rows = read_csv(results / "study_labelnoise_tiny" / "table.csv")
    x, m, s, n = fig_labelnoise.error_vs_p(rows, group)
    assert list(x) == [0.0, 0.25]
    for p, mean, std, count in zip(x, m, s, n):
        e = [r["test_error"] for r in rows if r["flip_rate"] == p and r["converged"] and by_hand_group(r) == group]
        assert count == len(e) >= 2
        # one or two roundings of a mean and a population standard deviation (ddof 0, the std the figure names)
        assert mean == pytest.approx(statistics.fmean(e), rel=1e-15)
        assert std == pytest.approx(statistics.pstdev(e), rel=1e-13, abs=1e-16)
    assert np.any(s > 0)                   # not vacuous: some spread, so ddof 1 would differ (by √(n/(n−1)))


def test_dynamics_figure_is_skipped_without_curves(results, tmp_path):
    d = results / "study_optimizers_tiny"
    meta = load_json(d / "study.json")
    assert fig_optimizers.dynamics_figure(d, tmp_path / "x.png", 1.0, 40)
    meta2 = json.loads(json.dumps(meta))
    for s in meta2["settings"]:
        s["curve_runs"] = 0
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "study.json").write_text(json.dumps(meta2))
    assert not fig_optimizers.dynamics_figure(tmp_path / "s", tmp_path / "y.png", 1.0, 40)


def test_presets_build_valid_sweeps_and_the_cli_knows_the_study(tmp_path, capsys):
    from refvit.cli import main
    for preset in ("quick", "full"):
        st = getattr(OptimizerStudy, preset)()
        for s in st.settings:
            for opt in st.optimizers:        # every sweep the preset can make is a valid config (dense for sign/adam)
                sw = s.sweep("compare", opt, st.lr_grid[-1], 0)
                assert opt == "gd" or sw.train.backend == "auto"
            assert s.series({o: {"lr": 0.1} for o in st.optimizers}, st.optimizers)[-1]["reference"]
        ln = getattr(LabelNoiseStudy, preset)()
        for p in ln.flip_rates:              # Ns are multiples of 10: round(p·N) = p·N exactly
            assert all(abs(round(p * N) - p * N) < 1e-9 for N in ln.Ns)
            assert ln.sweep(p).data.flip_rate == p
    # the subcommand is registered and refuses to redraw a study that was never run
    assert main(["study", "optimizers", "--figures-only", "--results", str(tmp_path)]) == 2
    assert "no saved study" in capsys.readouterr().err


def test_label_noise_figure_names_one_snr_convention_and_draws_in_it(results, monkeypatch):
    """Suptitle, axes and legends all use SNR = ‖μ‖/(σ_p√d), the convention the regime groups are defined in: the
    red curve is N·SNR² = 2.5 in the plotted SNR and the heatmap cells sit at the runs' σ_p SNRs (the tiny study's
    σ_p = 1 differs from the authors' axis σ = 0.2, so the two conventions differ by a factor 5 here)."""
    from .drawn import capture, close, texts
    d = results / "study_labelnoise_tiny"
    figs = capture(monkeypatch, fig_labelnoise)
    fig_labelnoise.labelnoise_figure(d, "unused.png")
    (fig,) = figs
    words = " ".join(texts(fig))
    assert "σ_p" in fig._suptitle.get_text() and "axis" not in words and "0.2·√d" not in words
    constants = {float(k) for k in re.findall(r"N·SNR² = ([0-9.]+)", words)}
    assert constants == {2.5}, constants
    table = read_columns(d / p_folder(0.0) / "table.csv")
    heatmaps = fig.get_axes()[:2]
    for ax in heatmaps:
        assert ax.get_legend().get_texts()[0].get_text() == "N·SNR² = 2.5"
        x, y = ax.get_lines()[0].get_data()
        np.testing.assert_allclose(y * x ** 2, 2.5, rtol=1e-12)     # N = 2.5/SNR²: exact up to rounding
        lo, hi = ax.get_xlim()
        assert lo < table["snr"].min() and table["snr"].max() < hi < table["snr_axis"].max()
    close(figs)


def test_label_noise_legends_count_the_runs_of_each_group(results, monkeypatch):
    from .drawn import capture, close
    d = results / "study_labelnoise_tiny"
    rows = read_csv(d / "table.csv")
    figs = capture(monkeypatch, fig_labelnoise)
    fig_labelnoise.labelnoise_figure(d, "unused.png")
    legend = [t.get_text() for t in figs[0].get_axes()[-2].get_legend().get_texts()]
    for group in ("benign", "transition", "harmful"):
        counts = {sum(1 for r in rows if r["group"] == group and r["flip_rate"] == p and r["converged"])
                  for p in (0.0, 0.25)}                     # by hand from the run table
        if counts == {0}:
            continue
        want = f"{min(counts)} runs" if len(counts) == 1 else f"{min(counts)}–{max(counts)} runs"
        assert f"{group} cells (mean ± std, {want})" in legend, legend
    assert fig_labelnoise.runs_label(np.array([12, 12, 12])) == "12 runs"
    assert fig_labelnoise.runs_label(np.array([8, 12, 10])) == "8–12 runs"
    close(figs)


# --- the committed summaries ---------------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
NUMBER = r"-?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?|inf|nan"


def line_shape(line: str) -> str:
    """A summary line with its numbers, lists of numbers and the rate scan's list of rate:verdict/loss blanked out
    (their lengths follow the preset)."""
    s = re.sub(NUMBER, "#", line)
    s = re.sub(r"#:\w+(?:/#)?(?:, #:\w+(?:/#)?)*", "SCAN", s)
    s = re.sub(r"#(?:, #)+", "LIST", s)
    return re.sub(r"\s+", " ", s).strip()


@pytest.mark.parametrize("kind, folder, summary", [
    ("label-noise", "study_labelnoise_tiny", "label_noise_summary"),
    ("optimizers", "study_optimizers_tiny", "optimizer_summary")])
def test_committed_summaries_are_what_their_command_writes_now(results, kind, folder, summary):
    """Each committed summary in figures/ names its command on its first line, sits where that command writes it,
    and holds only lines of the kinds the summary code writes today (numbers aside): a summary left from an older
    version of a study (e.g. with its wall-clock line) fails here and must be regenerated by its command."""
    from refvit.analysis import summaries
    written = {line_shape(x) for x in getattr(summaries, summary)(results / folder, "").splitlines()[1:]}
    assert line_shape("wall clock 18.9 s for the runs") not in written          # what the check looks for
    stem = {"label-noise": "labelnoise", "optimizers": "optimizers"}[kind]
    committed = sorted((ROOT / "figures").glob(f"{stem}_*_summary.txt"))
    assert committed
    for path in committed:
        lines = path.read_text(encoding="utf-8").splitlines()
        preset = path.name[len(stem) + 1: -len("_summary.txt")]
        assert lines[0] == f"refvit study {kind} --preset {preset}", path.name
        stale = {line_shape(x) for x in lines[1:]} - written
        assert not stale, (path.name, stale)
