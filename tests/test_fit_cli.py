"""`refvit fit SWEEP_DIR`: fits the verified run files of a sweep folder and says what it replaced when the folder's
fit.json held a fit of other settings (never a silent rewrite)."""
import json

from refvit import cli
from refvit.jiang2024.boundary import fit_sweep
from refvit.jiang2024.sweep import run_sweep

from .test_sweep import tiny_sweep


def test_a_refit_of_other_settings_says_what_it_replaced(tmp_path, capsys):
    out = tmp_path / "sw"
    run_sweep(tiny_sweep(), out, workers=0, progress=False)
    first = fit_sweep(out, n_boot=5, seed=3)                         # what reproduce would have written
    capsys.readouterr()
    assert cli.main(["fit", str(out), "--n-boot", "0"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("fitted boundary") and f"replaced {out / 'fit.json'}" in text
    assert "n_boot=5" in text and "seed=3" in text                   # the settings that differ, as they were
    assert json.loads((out / "fit.json").read_text())["n_boot"] == 0 and first["n_boot"] == 5
    assert cli.main(["fit", str(out), "--n-boot", "0"]) == 0         # the same fit again: nothing replaced
    assert "replaced" not in capsys.readouterr().out
