"""Own grids from the command line: `refvit sweep OUT --Ns … --mu-norms … --repeats …` runs the presets' Figure-1
protocol on any grid, says what it computed and skipped, and `refvit heatmap` draws any sweep folder; bad input ends
with one line, status 2, nothing written. Without progress bars, long commands print one line per stage."""
import json

import pytest

from refvit import cli, pipelines
from refvit.jiang2024.sweep import Sweep, run_one, run_sweep
from refvit.results import sweep_run_file

from .test_sweep import tiny_sweep


def _png(path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_grid_from_the_command_line_is_the_presets_protocol_and_resumes(tmp_path, capsys):
    out = tmp_path / "mine"
    argv = ["sweep", str(out), "--Ns", "2", "--mu-norms", "20,40", "--repeats", "1", "--workers", "0"]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert f"sweep {out}: 2 runs, 2 computed, 0 already saved (skipped); wrote {out / 'table.csv'}" in text
    meta = json.loads((out / "sweep.json").read_text())
    assert meta["settings_hash"] == Sweep.quick().settings_hash()    # the quick preset's setting and protocol
    assert meta["settings_hash"] == Sweep("x", (2,), (20,), 1).settings_hash()   # Sweep's defaults: FIGURE1_TRAIN
    assert (meta["train"]["coords"], meta["train"]["backend"]) == ("span", "auto")
    assert (meta["Ns"], meta["mu_norms"], meta["repeats"], meta["name"]) == ([2], [20, 40], 1, "mine")
    # the run equals the quick preset's run of that cell, computed apart from any folder
    row = json.loads((out / "runs" / sweep_run_file(2, 20, 0)).read_text())
    quick = Sweep.quick()
    alone = run_one(*quick.cell_configs(2, 20), quick.seed, 0)
    for k in ("steps", "status", "train_loss", "test_loss", "test_error", "attn_signal"):
        assert row[k] == alone[k], k                                # the same numbers, bit for bit

    assert cli.main(argv) == 0                                       # rerun: everything on disk, nothing computed
    assert "2 runs, 0 computed, 2 already saved (skipped)" in capsys.readouterr().out
    (out / "runs" / sweep_run_file(2, 40, 0)).write_text("{}")     # a damaged run file
    assert cli.main(argv) == 0
    text = capsys.readouterr()
    assert "2 runs, 1 computed, 1 already saved (skipped), 1 damaged files quarantined and recomputed" in text.out
    assert len(list((out / "quarantine").iterdir())) == 1


@pytest.mark.parametrize("argv, names", [
    (["--Ns", "3", "--mu-norms", "20"], "--Ns"),                              # odd N: labels cannot balance
    (["--Ns", "2", "--mu-norms", "0"], "--mu-norms"),                         # ‖μ‖ must be positive
    (["--Ns", "2", "--mu-norms", "20", "--preset", "quick"], "--preset"),     # two sweeps named
    (["--Ns", "2"], "--mu-norms"),                                            # half a grid
    (["--repeats", "2"], "--Ns"),                                             # repeats without a grid
    (["--spec", "s.json", "--seed", "3"], "--seed"),                          # the spec has its own seed
])
def test_a_bad_grid_is_one_line_status_2_and_nothing_written(tmp_path, capsys, argv, names):
    out = tmp_path / "never"
    assert cli.main(["sweep", str(out), *argv, "--workers", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("refvit: error:") and len(err.splitlines()) == 1 and names in err, err
    assert not out.exists()


@pytest.mark.parametrize("value", ["a,b", "2.5", ""])
def test_a_grid_value_that_is_not_a_whole_number_is_refused_by_the_parser(tmp_path, capsys, value):
    with pytest.raises(SystemExit) as e:
        cli.main(["sweep", str(tmp_path / "x"), "--Ns", value, "--mu-norms", "20"])
    assert e.value.code == 2 and "--Ns" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_heatmap_draws_any_sweep_folder_from_its_verified_runs(tmp_path, capsys):
    out = tmp_path / "tiny"
    run_sweep(tiny_sweep(), out, workers=0, progress=False)
    png = tmp_path / "h.png"
    assert cli.main(["heatmap", str(out), "--out", str(png)]) == 0
    assert _png(png) and "refvit fit" in capsys.readouterr().out                  # says how to add the fit
    assert cli.main(["fit", str(out), "--n-boot", "0"]) == 0
    assert cli.main(["heatmap", str(out), "--figures", str(tmp_path / "f")]) == 0
    assert _png(tmp_path / "f" / "heatmap_tiny.png") and "refvit fit" not in capsys.readouterr().out
    (out / "runs" / sweep_run_file(2, 1, 0)).write_text("garbage")            # a damaged run: refused, named
    assert cli.main(["heatmap", str(out), "--out", str(tmp_path / "no.png")]) == 2
    assert "runs missing" in capsys.readouterr().err and not (tmp_path / "no.png").exists()
    assert cli.main(["heatmap", str(tmp_path / "absent")]) == 2


def test_without_progress_bars_each_stage_prints_one_line(tmp_path, capsys, monkeypatch):
    tiny = tiny_sweep(repeats=1)                  # 15 runs with benign and harmful ones: the fit is finite
    monkeypatch.setattr(Sweep, "quick", classmethod(lambda cls, **kw: Sweep.from_dict({**tiny.to_dict(),
                                                                                      "name": "quick"})))
    pipelines.reproduce("quick", tmp_path / "r", tmp_path / "f", workers=0, progress=False, n_boot=0,
                        dynamics=False)
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("sweep quick: 15 runs, 15 computed, 0 already saved")
    assert err[1].startswith("fitted boundary") and err[2].startswith("figures: 1 drawn into")
    assert len(err) == 3
    pipelines.reproduce("quick", tmp_path / "r", tmp_path / "f", workers=0, progress=True, n_boot=0,
                        dynamics=False)
    assert not any(line.startswith(("fitted", "figures:")) for line in capsys.readouterr().err.splitlines())
