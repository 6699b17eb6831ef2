"""Fault injection census: tries faults of each kind and counts how many are handled (named, not silent).

    PYTHONPATH=. python benchmarks/fault_census.py     # prints "kind: handled/tried", each unhandled fault, the total

A fault is handled when it ends in the documented way: a ValueError (FileProblem for files) naming what is wrong,
a quarantined-and-recomputed run file, a status of its own, (kind 2) no worker alive after its parent died, (kind 8)
a fit equal to the one of the verified run files, (kind 9) one line, exit 130 and no worker left after Ctrl-C, or
(kinds 10-12) one line naming the option, file or command.
"""
import contextlib
import io
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
from refvit.jiang2024.sweep import Sweep, run_sweep
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
        results.append((f"manifest {what}", named_or_renewed(lambda: run_sweep(TINY, out, workers=0,
                                                                               progress=False), out / "sweep.json")))
    return results


def named_or_renewed(call, manifest: Path) -> bool:
    """A damaged manifest of a folder whose run files carry their settings hash is handled when the rerun sets it
    aside in quarantine/ with a warning naming it and completes: refusing it, even by name, blocks every rerun."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            call()
        except Exception:  # noqa: BLE001 - a rerun that stops is the fault
            return False
    return manifest.name in err.getvalue() and (manifest.parent / "quarantine" / manifest.name).exists()


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


TINY_DYN = dict(regimes=(("harmful", 1), ("benign", 8)), runs=2, seed=0, data=TINY.data.replace(N=4), model=TINY.model,
                train=TINY.train.replace(steps=30, eval_every=1))


def _cli_line(argv, timeout=120, **kw):
    """(exit code, stderr) of ``python -m refvit.cli argv``."""
    r = subprocess.run([sys.executable, "-m", "refvit.cli", *argv], cwd=REPO, capture_output=True, text=True,
                       timeout=timeout, **kw)
    return r.returncode, r.stderr


def dynamics_faults(tmp: Path) -> list:
    """Figure-3 dynamics files that are not what they claim, read back on resume and by the figure."""
    from refvit.analysis.fig_dynamics import load_runs
    from refvit.jiang2024.dynamics import Dynamics, run_dynamics
    from refvit.results import dynamics_run_file
    spec = Dynamics("tiny", **TINY_DYN)
    out = tmp / "dyn"
    run_dynamics(spec, out, workers=0, progress=False)
    f = {(n, r): out / dynamics_run_file(n, mu, r) for n, mu in spec.regimes for r in range(spec.runs)}
    good = {k: v.read_bytes() for k, v in f.items()}
    loss = {k: load_history(v)[1]["h_train_loss"] for k, v in f.items()}
    results = []

    def resumed(what, damage, key):
        damage(f[key])
        try:
            run_dynamics(spec, out, workers=0, progress=False)
        except Exception:  # noqa: BLE001 - a rerun that stops is the fault
            results.append((what, False))
            return
        q = out / "quarantine"
        results.append((what, q.exists() and any(p.name.startswith(f[key].name) for p in q.iterdir())
                        and np.array_equal(load_history(f[key])[1]["h_train_loss"], loss[key])))

    def edit(key, **changes):
        def damage(path):
            s, a = load_history(path)
            rio.save_npz(path, **a, summary=np.array(json.dumps({**s, **changes})))
        return damage
    resumed("dynamics file of another regime", lambda p: p.write_bytes(good[("benign", 0)]), ("harmful", 0))
    resumed("dynamics file of another repeat", lambda p: p.write_bytes(good[("harmful", 0)]), ("harmful", 1))
    resumed("truncated dynamics file", lambda p: p.write_bytes(good[("benign", 1)][:100]), ("benign", 1))
    resumed("dynamics status 'bogus'", edit(("benign", 0), status="bogus"), ("benign", 0))
    resumed("dynamics NaN loss, converged", edit(("benign", 0), status="converged", train_loss=float("nan")),
            ("benign", 0))
    resumed("dynamics coefficients 'maybe'", edit(("harmful", 0), coefficients="maybe"), ("harmful", 0))
    other = Dynamics("tiny", **{**TINY_DYN, "seed": 1})
    run_dynamics(other, tmp / "dyn1", workers=0, progress=False)
    resumed("dynamics file of another seed", lambda p: p.write_bytes(
        (tmp / "dyn1" / p.name).read_bytes()), ("harmful", 1))
    (out / "dynamics.json").write_text('{"seed": 0, "da')
    results.append(("dynamics manifest truncated", named_or_renewed(
        lambda: run_dynamics(spec, out, workers=0, progress=False), out / "dynamics.json")))
    f[("benign", 1)].write_bytes(good[("benign", 0)])          # the figure reads a folder nobody resumed
    results.append(("figure reads a swapped dynamics file", raises(lambda: load_runs(out), str(f[("benign", 1)]))))
    return results


def fit_faults(tmp: Path) -> list:
    """``python -m refvit.fit`` on a table.csv that is not the folder's runs."""
    from refvit.jiang2024.boundary import fit_sweep
    out = tmp / "fitsweep"
    run_sweep(TINY, out, workers=0, progress=False)
    ref = fit_sweep(out, n_boot=0, save=False)
    table = (out / "table.csv").read_text().splitlines()
    lines = table[:1] + [ln.replace(",test", ",x") for ln in table[1:]]
    cases = {"table of other losses": [table[0]] + [",".join(c if i != 12 else "0.0" for i, c in
                                                             enumerate(ln.split(","))) for ln in table[1:]],
             "table with a run dropped": table[:-1], "table status 'bogus'": lines[:1] + [
                 ",".join(c if i != 9 else "bogus" for i, c in enumerate(ln.split(","))) for ln in table[1:]]}
    results = []
    for what, text in cases.items():
        (out / "table.csv").write_text("\n".join(text) + "\n")
        try:
            got = fit_sweep(out, n_boot=0, save=False)
            results.append((what, got == ref))
        except ValueError as e:
            results.append((what, "table.csv" in str(e)))
        except Exception:  # noqa: BLE001
            results.append((what, False))
    return results


def stop_faults(tmp: Path) -> list:
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) during a sweep: one line, exit 130,
    no worker left."""
    sw = Sweep("slow", (2, 4), (1, 2), 1, 0, DataConfig(N=2, M=16, d=1024, mu_norm=1.0, n_test=20),
               ModelConfig(d_h=256, d_v=256), TrainConfig(lr=0.01, steps=4000, backend="numpy"))
    (tmp / "slow.json").write_text(json.dumps(sw.to_dict()))
    proc = subprocess.Popen([sys.executable, "-m", "refvit.cli", "sweep", str(tmp / "int"), "--spec",
                             str(tmp / "slow.json"), "--workers", "2", "--no-progress"], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    workers, deadline = set(), time.monotonic() + 120
    while len(workers) < 2 and time.monotonic() < deadline and proc.poll() is None:
        kids = {int(c) for t in Path(f"/proc/{proc.pid}/task").glob("*/children") for c in t.read_text().split()}
        workers = {c for c in kids if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()}
        time.sleep(0.05)
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGINT)
    err = proc.communicate(timeout=60)[1].decode()
    time.sleep(2)
    left = [w for w in workers if Path(f"/proc/{w}").exists()
            and Path(f"/proc/{w}/stat").read_text().split(")")[-1].split()[0] != "Z"]
    for w in left:
        os.kill(w, signal.SIGKILL)
    return [("Ctrl-C: exit 130", proc.returncode == 130), ("Ctrl-C: one line, no traceback",
            err.count("\n") == 1 and "Traceback" not in err and "resume" in err), ("Ctrl-C: workers ended",
            len(workers) == 2 and not left)]


def expected_error_faults(tmp: Path) -> list:
    """Expected errors that must end in one line naming what to change, not a traceback."""
    from refvit.fit import fit_width
    from refvit.golden import regenerate
    from refvit.jiang2024.data import make_dataset
    rng = np.random.default_rng(0)
    (tmp / "f.py").write_text(f"from pathlib import Path\ndef forward(W_Q, W_K, W_V, w_O, X):\n"
                              f"    Path({str(tmp / 'called')!r}).touch()\n    return X[:, 0, 0] * 0.0\n")
    huge = DataConfig(N=2_000_000, M=16, d=4096, mu_norm=1.0, n_test=20)
    out = [("make_dataset of an N too large to allocate", raises(lambda: make_dataset(huge, rng, rng), "memory")),
           ("Sweep with an N too large to allocate", raises(lambda: Sweep("x", (2_000_000,), (1,), 1, 0, huge),
                                                            "memory")),
           ("make_dataset(rng=int)", raises(lambda: make_dataset(DataConfig(), 1, 2), "data_rng")),
           ("make_dataset(cfg=dict)", raises(lambda: make_dataset({"N": 2}, rng, rng), "cfg")),
           ("fit_width NaN snr", raises(lambda: fit_width([np.nan, 1.0, 2.0], [0, 1, 1], rng, 0), "snr")),
           ("fit_width inf snr", raises(lambda: fit_width([np.inf, 1.0, 2.0], [0, 1, 1], rng, 0), "snr")),
           ("fit_width NaN label", raises(lambda: fit_width([3.0, 1.0, 2.0], [np.nan, 1, 1], rng, 0)))]
    for key in ("steps", "traj_steps", "cases"):
        m = {"format": 1, "steps": 3, "traj_steps": [0, 3], "cases": []}
        from refvit.golden import FORMAT
        m["format"] = FORMAT
        m.pop(key)
        out.append((f"golden manifest without {key}", raises(lambda m=m: regenerate(m, tmp / "g"), key)))
    for value in ("nan", "inf"):
        rc, err = _cli_line(["crosscheck", f"{tmp / 'f.py'}:forward", "--timeout", value, "--cases", "small"])
        out.append((f"--timeout {value}", rc == 2 and err.count("\n") == 1 and "timeout" in err))
    return out


def path_faults(tmp: Path) -> list:
    """Messages that name the path; output paths checked before the work."""
    (tmp / "plain").write_text("x")
    (tmp / "called").unlink(missing_ok=True)
    rc, err = _cli_line(["crosscheck", f"{tmp / 'f.py'}:forward", "--json", str(tmp / "plain" / "r.json"),
                         "--cases", "small"])
    out = [("--json under a plain file, before the work", rc == 2 and str(tmp / "plain") in err
            and err.count("\n") == 1 and not (tmp / "called").exists())]
    real = os.fsync

    def full(fd):
        raise OSError(28, "No space left on device")
    @rio.one_line_errors
    def main():
        rio.save_json(tmp / "full.json", {})
    os.fsync = full
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            code = main()
    finally:
        os.fsync = real
    out.append(("full disk names the path", code == 2 and str(tmp / "full.json") in err.getvalue()))
    return out


def entry_faults(tmp: Path) -> list:
    """Modules that look runnable run (or say how)."""
    (tmp / "tiny.json").write_text(json.dumps(TINY.to_dict()))
    r = subprocess.run([sys.executable, "-m", "refvit.jiang2024.sweep", str(tmp / "m"), "--spec", str(tmp / "tiny.json"),
                        "--workers", "0", "--no-progress"], cwd=REPO, capture_output=True, text=True, timeout=300)
    ran = r.returncode == 0 and (tmp / "m" / "table.csv").exists()
    says = r.returncode != 0 and "refvit sweep" in r.stderr
    return [("python -m refvit.jiang2024.sweep OUT", ran or says)]


def quarantine_faults(tmp: Path) -> list:
    """Quarantined files are counted in the summary."""
    from refvit.analysis.summaries import reproduce_summary
    from refvit.jiang2024.boundary import fit_sweep
    out = tmp / "qsweep"
    run_sweep(TINY, out, workers=0, progress=False)
    (out / "runs" / sweep_run_file(2, 1, 0)).write_text("{}")
    run_sweep(TINY, out, workers=0, progress=False)
    fit_sweep(out, n_boot=0)
    text = reproduce_summary(out)
    return [("summary counts quarantined files", "quarantine" in text and "1 file" in text)]


def main() -> int:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        kinds = {"1 sweep files": sweep_faults(tmp), "2 orphans": orphan_faults(tmp),
                 "3 overflow": overflow_faults(), "4 validation": validation_faults(),
                 "5 file errors": file_faults(tmp), "6 history memory": history_faults(),
                 "7 dynamics files": dynamics_faults(tmp), "8 fit tables": fit_faults(tmp),
                 "9 interrupt": stop_faults(tmp), "10 expected errors": expected_error_faults(tmp),
                 "11 paths": path_faults(tmp), "12 entry points": entry_faults(tmp),
                 "13 quarantine count": quarantine_faults(tmp)}
    total = tried = 0
    for kind, results in kinds.items():
        print(f"{kind}: {sum(ok for _, ok in results)}/{len(results)} handled")
        total += sum(ok for _, ok in results)
        tried += len(results)
        for what, ok in results:
            if not ok:
                print(f"    not handled: {what}")
    print(f"total: {total}/{tried} handled")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
