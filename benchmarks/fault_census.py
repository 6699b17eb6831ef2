"""Fault injection census: tries faults of each kind and counts how many are handled (named, not silent).

    python benchmarks/fault_census.py          # prints "kind: handled/tried" and each unhandled fault

A fault is handled when it ends in the documented way: a ValueError (FileProblem for files) naming what is wrong,
a quarantined-and-recomputed run file, a status of its own, or (kind 2) no worker alive after its parent died.
"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import refvit.io as rio
from refvit import DataConfig, ModelConfig, TrainConfig, forward
from refvit.cli import main as cli_main
from refvit.streams import streams
from refvit.jiang2024.experiment import draw_cell
from refvit.results import load_history, sweep_run_file
from refvit.sweep import Sweep, run_sweep
from refvit.jiang2024.train import train

REPO = Path(__file__).resolve().parents[1]
TINY = Sweep("tiny", (2, 4), (1, 8), 3, 0, DataConfig(N=2, M=3, d=64, mu_norm=1.0, sigma_p=1.0, sigma_w=0.05,
                                                      n_test=20),
             ModelConfig(d_h=8, d_v=8, init_scale=1.0), TrainConfig(lr=1.0, steps=200, loss_threshold=0.01,
                                                                     backend="numpy"))


def raises(call, text="") -> bool:
    try:
        call()
    except ValueError as e:
        return text in str(e)
    except Exception:  # noqa: BLE001 - any other exception is a fault not handled
        return False
    return False


def sweep_faults(tmp: Path) -> list:
    out = tmp / "sweep"
    run_sweep(TINY, out, workers=0, progress=False)
    runs = out / "runs"
    names = [sweep_run_file(*s) for s in TINY.specs()]
    row = json.loads((runs / names[0]).read_text())
    texts = {"truncated": (runs / names[0]).read_text()[:40], "garbage": "\x00\x7f", "empty": "", "{}": "{}",
             "[]": "[]", "other run": json.dumps(row), "other settings": json.dumps({**row, "settings_hash": "x"}),
             "nan loss": json.dumps({**row, "test_loss": float("nan")}), "bad type": json.dumps({**row, "N": "2"})}
    assert len(names) >= len(texts), "the tiny sweep needs a run file for every fault"
    for (what, text), name in zip(texts.items(), names[1:] + names[:1]):
        (runs / name).write_text(text)
    run_sweep(TINY, out, workers=0, progress=False)
    moved = {p.name for p in (out / "quarantine").iterdir()}
    results = [(f"run file {what}", name in moved) for (what, _), name in zip(texts.items(), names[1:] + names[:1])]
    for what, text in (("truncated", '{"seed"'), ("garbage", "\x00"), ("empty", ""), ("{}", "{}"), ("[]", "[]")):
        (out / "sweep.json").write_text(text)
        results.append((f"manifest {what}", raises(lambda: run_sweep(TINY, out, workers=0, progress=False),
                                                   "sweep.json")))
    return results


def orphan_faults(tmp: Path) -> list:
    sw = Sweep("slow", (2, 4), (1, 2), 1, 0, DataConfig(N=2, M=16, d=1024, mu_norm=1.0, n_test=20),
               ModelConfig(d_h=256, d_v=256), TrainConfig(lr=0.01, steps=4000, backend="numpy"))
    (tmp / "spec.json").write_text(json.dumps(sw.to_dict()))
    results = []
    for sig in (signal.SIGKILL, signal.SIGTERM):
        proc = subprocess.Popen([sys.executable, "-m", "refvit.cli", "sweep", str(tmp / f"o{sig}"), "--spec",
                                 str(tmp / "spec.json"), "--workers", "2", "--no-progress"], cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
        workers, deadline = set(), time.monotonic() + 120
        while len(workers) < 2 and time.monotonic() < deadline and proc.poll() is None:
            kids = {int(c) for t in Path(f"/proc/{proc.pid}/task").glob("*/children") for c in t.read_text().split()}
            workers = {c for c in kids if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()}
            time.sleep(0.05)
        time.sleep(1.0)
        os.kill(proc.pid, sig)
        proc.wait()
        time.sleep(5)
        left = [w for w in workers if Path(f"/proc/{w}").exists()
                and Path(f"/proc/{w}/stat").read_text().split(")")[-1].split()[0] != "Z"]
        for w in left:
            os.kill(w, signal.SIGKILL)
        results.append((f"parent {signal.Signals(sig).name}", len(workers) == 2 and not left
                        and proc.stdout.read() == b""))
        proc.stdout.close()
    return results


def overflow_faults() -> list:
    data, p = draw_cell(DataConfig(N=4, M=3, d=16, mu_norm=1.0, sigma_p=1.0, sigma_w=0.05, n_test=4),
                        ModelConfig(d_h=4, d_v=4, init_scale=1.0), 0, (1,))
    h_test = train(p, data.X, data.y, X_test=data.X_test * 1e160, y_test=data.y_test, lr=0.1, steps=3)[1]
    h_train = train(p, data.X * 1e160, data.y, lr=0.1, steps=3)[1]
    return [("test set overflow", h_test.status == "nonfinite_test" and "overflowed" in h_test.message),
            ("training set overflow", h_train.status == "overflow" and "max token norm" in h_train.message),
            ("forward overflow", raises(lambda: forward(p, data.X * 1e160), "overflowed")),
            ("mu_norm 1e200", raises(lambda: DataConfig(mu_norm=1e200), "overflows")),
            ("init_scale 1e300", raises(lambda: ModelConfig(init_scale=1e300), "underflows")),
            ("sigma0 1e-300", raises(lambda: ModelConfig(init="gaussian", sigma0=1e-300), "underflows"))]


def validation_faults() -> list:
    def cli(argv):
        try:
            cli_main(argv)
        except SystemExit as e:
            return e.code == 2
        return False
    return [("streams(1.7)", raises(lambda: streams(1.7))), ("streams(True)", raises(lambda: streams(True))),
            ("streams(0, 2.5)", raises(lambda: streams(0, 2.5))), ("streams(-1)", raises(lambda: streams(-1))),
            ("Sweep Ns (2.9, 4.2)", raises(lambda: Sweep("x", (2.9, 4.2), (1,), 1))),
            ("sigma_p nan", raises(lambda: DataConfig(sigma_p=float("nan")))),
            ("snr_axis_sigma 0", raises(lambda: DataConfig(snr_axis_sigma=0.0))),
            ("adam_betas (0.9,)", raises(lambda: TrainConfig(adam_betas=(0.9,)), "pair")),
            ("adam_betas 0.9", raises(lambda: TrainConfig(adam_betas=0.9), "pair")),
            ("adam_betas ('a', 0.9)", raises(lambda: TrainConfig(adam_betas=("a", 0.9)))),
            ("--workers -1", cli(["sweep", "x", "--workers", "-1"])),
            ("--n-boot -1", cli(["reproduce", "--n-boot", "-1"])),
            ("--N -2", cli(["coefficients", "train", "--N", "-2"]))]


def file_faults(tmp: Path) -> list:
    rio.save_npz(tmp / "ok.npz", a=np.arange(3.0))
    (tmp / "cut.npz").write_bytes((tmp / "ok.npz").read_bytes()[:30])
    (tmp / "text.npz").write_text("text")
    np.savez(tmp / "obj.npz", a=np.array([{}], dtype=object))
    for name, text in (("empty.json", ""), ("bad.json", "{x"), ("list.json", "[]"), ("short.csv", "a,b\n1\n")):
        (tmp / name).write_text(text)
    cases = [("load_json " + n, lambda n=n: rio.load_json(tmp / n, expect=dict))
             for n in ("missing.json", "empty.json", "bad.json", "list.json")]
    cases += [("load_npz " + n, lambda n=n: rio.load_npz(tmp / n))
              for n in ("missing.npz", "cut.npz", "text.npz", "obj.npz")]
    cases += [("read_csv short row", lambda: rio.read_csv(tmp / "short.csv")),
              ("read_columns empty", lambda: rio.read_columns(tmp / "empty.json")),
              ("load_history not one", lambda: load_history(tmp / "ok.npz"))]
    out = [(what, raises(call, str(tmp))) for what, call in cases]
    for argv in (["coefficients", "weights", str(tmp / "missing.npz")], ["coefficients", "draw", str(tmp / "text.npz")],
                 ["coefficients", "weights", str(tmp / "ok.npz"), "--results", str(tmp)]):
        r = subprocess.run([sys.executable, "-m", "refvit.cli", *argv], cwd=REPO, capture_output=True, text=True)
        out.append((f"cli {argv[1]} {Path(argv[2]).name}", r.returncode == 2 and r.stderr.count("\n") == 1
                    and "Traceback" not in r.stderr))
    return out


def history_faults() -> list:
    data, p = draw_cell(DataConfig(N=4, M=3, d=16, mu_norm=1.0, sigma_p=1.0, sigma_w=0.05, n_test=4),
                        ModelConfig(d_h=4, d_v=4, init_scale=1.0), 0, (1,))
    try:
        h = train(p, data.X, data.y, config=TrainConfig(lr=0.1, steps=1000, history_every=0))[1]
    except ValueError:
        return [("history_every=0 on 1000 steps", False)]
    return [("history_every=0 on 1000 steps", len(h.step) == 1)]


def main() -> int:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        kinds = {"1 sweep files": sweep_faults(tmp), "2 orphans": orphan_faults(tmp),
                 "3 overflow": overflow_faults(), "4 validation": validation_faults(),
                 "5 file errors": file_faults(tmp), "6 history memory": history_faults()}
    for kind, results in kinds.items():
        print(f"{kind}: {sum(ok for _, ok in results)}/{len(results)} handled")
        for what, ok in results:
            if not ok:
                print(f"    not handled: {what}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
