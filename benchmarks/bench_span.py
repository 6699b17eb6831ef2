"""Dense (numpy, numba) vs span-coordinate training (docs/math.md §8): per step and per whole cell, in one run.

    python benchmarks/bench_span.py                                 # BLAS on both cores
    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_span.py --torch-threads 1 --clock process   # one core, CPU time
    python benchmarks/bench_span.py --json results/bench_span.json  # also save the numbers
    python benchmarks/bench_span.py --setting figure1               # the Figure-1 cell only

Also in the same run: the span step through ``refvit.trainer.run`` (loop included: (time of S + 1 steps − time of
1 step)/S), a PyTorch float64 autograd GD step of the same model on the same data and weights when torch is
installed (validated against the dense gradient first), and numpy's dgemm of the span step's Gram products,
U_c·[A_Q | A_K], timed both as one (n_u × r)·(r × 2 d_h) product and as two (n_u × r)·(r × d_h) ones: the faster
of the two is the step's floor. A profile of one span step (the product, the per-sample kernels, the rest of the
evaluation, the loop) and of one whole span cell follows. The targets it reports (met or not), Figure-1 cell:
span step via refvit.train ≤ 1.3× the dgemm floor and ≥ 6× faster than the torch step; whole span cell ≤ 0.12 s.

Per step: one loss-and-gradient evaluation at the parameters after 3 GD steps (a generic non-zero state). The span
step is validated first: P·Γ must equal the dense gradient (rel ≤ 1e-10) or it is not timed. A whole cell is data +
init + setup (token basis, Gram matrix, U·W(0)) + GD until the training loss is < 0.01 (checked before each step,
at most 1000 steps) + the test loss on the 100 fresh samples; the breakdown of the span cell says where its time
goes. All ratios come from this one run. Every time is the best (the minimum) of ``--repeat`` runs after one
warm-up, as timeit reports: on a machine shared with other jobs the other runs measure the other jobs (whole dense
cells: one run by default).
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from refvit import dynamics_setting, figure1_setting
from refvit.jiang2024.experiment import cell_key, draw_cell
from refvit.gradcheck import rel_error
from refvit.io import save_json
from refvit.jiang2024.model import loss_grads_cache
from refvit.jiang2024.span import SpanObjective
from refvit.jiang2024.train import make_objective
from refvit.trainer import run

# the three ways a cell is timed: TrainConfig changes of each
WAYS = {"numpy": {"coords": "dense", "backend": "numpy"}, "numba": {"coords": "dense", "backend": "numba"},
        "span": {"coords": "span", "backend": "auto"}}   # span: as the sweeps run it (the fused kernel with numba)

CLOCK = time.perf_counter        # --clock process: CPU time of this process (less sensitive to other jobs)


def dense_flops(N, M, d, d_h, d_v):
    """Multiply-adds × 2 of a dense step: X W_Q, X W_K, Xᵀ dQ, Xᵀ dK; attention; the value path via u = W_V w_O."""
    return 2 * (4 * N * M * d * d_h + 3 * N * M * M * d_h + 2 * d * d_v + 2 * N * M * d)


def span_flops(obj: SpanObjective, N, M, d_h, d_v):
    """Multiply-adds × 2 of a span step: U_c A_Q, U_c A_K (n_u × r × d_h); attention; value path; scatters."""
    n_u, r = obj.U_c.shape
    d = obj.tokens.U.shape[1]
    return 2 * (2 * n_u * r * d_h + 3 * N * M * M * d_h + 2 * d * d_v + 2 * n_u * d + 2 * n_u * r + r * d_v
                + 2 * N * M * d_h)


def torch_step_fn(p3, X, y, lr, train_w_O):
    """A GD step in PyTorch float64 autograd (same model as docs/math.md (2.7), (3.3)) and its gradients, or None
    without torch. Returns (step, grads at p3)."""
    try:
        import torch
    except ImportError:
        return None, None
    tX, ty = torch.tensor(X), torch.tensor(y)
    tp = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in p3]

    def loss_of(W_Q, W_K, W_V, w_O):
        S = torch.softmax((tX @ W_Q) @ (tX @ W_K).transpose(1, 2), dim=-1)   # (n, M, M) softmax over keys
        f = (S @ (tX @ (W_V @ w_O)).unsqueeze(-1)).squeeze(-1).mean(dim=1)   # mean over queries
        return torch.nn.functional.softplus(-ty * f).mean()                  # logistic loss

    def step():
        for t in tp:
            t.grad = None
        loss_of(*tp).backward()
        with torch.no_grad():
            for k, t in enumerate(tp):
                if k < 3 or train_w_O:
                    t -= lr * t.grad

    w = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in p3]
    loss_of(*w).backward()
    return step, [t.grad.numpy() for t in w]


def loop_step_time(obj_factory, train_cfg, repeat, steps=20):
    """Per-step time of the span step through ``refvit.trainer.run`` (history and updates included): (time of
    steps + 1 steps − time of 1 step)/steps, so that setup and the first evaluation (at A = 0) cancel."""
    cfg = train_cfg.replace(coords="span", loss_threshold=None)
    t_s = best_time(lambda: run(obj_factory(), cfg.replace(steps=steps + 1)), max(5, repeat // 2))
    t_0 = best_time(lambda: run(obj_factory(), cfg.replace(steps=1)), max(5, repeat // 2))
    return (t_s - t_0) / steps


def best_time(fn, repeat):
    fn()                                                   # warm-up: numba compilation, BLAS buffers, page faults
    times = []
    for _ in range(repeat):
        t0 = CLOCK()
        fn()
        times.append(CLOCK() - t0)
    return float(np.min(times))


class Timed:
    """Delegate to an objective and add up the time spent in three of its methods (for the cell breakdown)."""

    def __init__(self, inner, clock: dict):
        self.inner, self.clock = inner, clock

    def __getattr__(self, name):                          # everything else (state0, record, fresh_state, ...)
        return getattr(self.inner, name)

    def _call(self, name, *args):
        t0 = CLOCK()
        out = getattr(self.inner, name)(*args)
        self.clock[name] = self.clock.get(name, 0.0) + CLOCK() - t0
        return out

    def value_and_grad(self, state):
        return self._call("value_and_grad", state)

    def test_outputs(self, state):
        return self._call("test_outputs", state)

    def params(self, state):
        return self._call("params", state)


def training_layout(obj, state):
    """``state`` in the arrays training updates (``fresh_state``: A_Q, A_K the halves of one buffer), if the
    objective lays them out itself."""
    if not hasattr(obj, "fresh_state"):
        return state
    st = obj.fresh_state()
    for a, b in zip(st, state):
        a[...] = b
    return st


def step_profile(obj, state, step_ms, repeat) -> dict:
    """Where the time of one span step through ``run`` goes (ms): the Gram product U_c·[A_Q | A_K], the fused
    kernel of the per-sample work (``_kernels.span_step``: gathers, logits, softmax and its backward, dQ, dK,
    scatters; absent without numba), the rest of the evaluation (value path, Γ_V, ∇w_O, the loss) and the loop (GD
    update, finiteness check, history row)."""
    st = training_layout(obj, state)
    AQK = st.A_Q.base if st.A_Q.base is not None else np.hstack([st.A_Q, st.A_K])
    prof = {"Gram product": best_time(lambda: obj.U_c @ AQK, repeat)}
    if getattr(obj, "_step", None) is not None:
        tok, c = obj.tokens, obj.value_and_grad(st).cache
        out = [np.empty_like(c.Q), np.empty_like(c.K), np.empty_like(c.Z), np.empty_like(c.S), np.empty_like(c.abar),
               np.empty(c.abar.shape[0]), np.empty_like(c.v), np.empty((tok.n_unique, AQK.shape[1]))]
        UcA = obj.U_c @ AQK
        prof["fused kernel"] = best_time(lambda: obj._step(obj.QKW0, UcA, tok.index, c.v, obj.y,
                                                           float(obj.X.shape[0]), obj._first, *out), repeat)
    t_eval = best_time(lambda: obj.value_and_grad(st), repeat)
    prof["rest of the evaluation"] = t_eval - sum(prof.values())
    prof = {key: v * 1e3 for key, v in prof.items()}
    prof["loop"] = step_ms["span via train"]["ms"] - t_eval * 1e3
    return prof


def whole_cell(backend, data_cfg, model_cfg, train_cfg, seed=0):
    """One cell from scratch; returns (seconds by phase, History)."""
    clock = {}
    t0 = CLOCK()
    data, p0 = draw_cell(data_cfg, model_cfg, seed, cell_key(data_cfg.N, data_cfg.mu_norm))   # as run_cell draws
    t1 = t2 = CLOCK()
    train_cfg = train_cfg.replace(**WAYS[backend])
    obj = make_objective(train_cfg, p0, data.X, data.y, data.X_test, data.y_test)
    t3 = CLOCK()
    _, hist = run(Timed(obj, clock), train_cfg)
    t4 = CLOCK()
    phases = {"data and init": t1 - t0, "setup": t3 - t2,
              "train steps": clock["value_and_grad"] + 0.0, "test loss": clock.get("test_outputs", 0.0),
              "final W(t)": clock.get("params", 0.0)}
    phases["loop overhead"] = (t4 - t3) - phases["train steps"] - phases["test loss"] - phases["final W(t)"]
    phases["total"] = t4 - t0
    if backend == "span":   # FLOPs of the dense products each span phase cannot avoid (the BLAS floor)
        n_u, r = obj.U_c.shape
        d, d_h = data_cfg.d, model_cfg.d_h
        n_ut = data.X_test.shape[0] * data.X_test.shape[1]    # every test token (``tokens.all_tokens``)
        phases["GFLOP setup"] = 2 * (2 * n_u * d * d_h + n_u * n_u * d / 2) / 1e9          # U·W_Q(0), U·W_K(0), UUᵀ
        phases["GFLOP train steps"] = hist.steps * 2 * (2 * n_u * r * d_h) / 1e9          # U_c·A_Q, U_c·A_K
        phases["GFLOP test loss"] = 2 * (d * r * 2 * d_h + n_ut * d * 2 * d_h) / 1e9      # W(t), X_test·W(t)
    return phases, hist


def bench(name, data_cfg, model_cfg, train_cfg, repeat, cell_repeat, dense_cell_repeat):
    data, p0 = draw_cell(data_cfg, model_cfg, 0)
    N, M, d = data.X.shape
    d_h, d_v = model_cfg.d_h, model_cfg.d_v
    print(f"\n{name}: N={N}, M={M}, d={d}, d_h={d_h}, d_v={d_v}, ‖μ‖={data_cfg.mu_norm:g}")
    out = {"setting": name, "N": N, "M": M, "d": d, "d_h": d_h, "d_v": d_v, "mu_norm": data_cfg.mu_norm}

    # --- per step, at the state after 3 GD steps (at A = 0 the span step skips its two Gram products) --------
    obj = SpanObjective(p0, data.X, data.y)
    p3, _ = run(obj, train_cfg.replace(steps=3, loss_threshold=None, coords="span"))
    state = obj.final_state
    ref_loss, ref, _, _ = loss_grads_cache(p3, data.X, data.y, "numpy")
    loss, grads, _, _ = obj.value_and_grad(state)
    err = max(rel_error(obj.P @ g, r) for g, r in zip(grads[:3], ref[:3]))
    err = max(err, rel_error(grads[3], ref.w_O), abs(loss - ref_loss) / ref_loss)
    steps = {"dense numpy": lambda: loss_grads_cache(p3, data.X, data.y, "numpy"),
             "dense numba": lambda: loss_grads_cache(p3, data.X, data.y, "numba")}
    # the objectives training builds (``make_objective``: with w_O frozen it skips ∇w_O), the sweeps' one and the
    # numpy path, validated the same way
    obj_t = make_objective(train_cfg.replace(**WAYS["span"]), p0, data.X, data.y)
    obj_n = make_objective(train_cfg.replace(coords="span", backend="numpy"), p0, data.X, data.y)
    for key, o in (("span", obj_t), ("span numpy path", obj_n)):
        st_o = training_layout(o, state)
        g_o = o.value_and_grad(st_o)[1]
        err_o = max(rel_error(o.P @ g, r) for g, r in zip(g_o[:3], ref[:3]))
        if max(err, err_o) <= 1e-10:
            steps[key] = (lambda o=o, st_o=st_o: o.value_and_grad(st_o))
        else:
            print(f"  {key} REFUSED: P·Γ differs from the dense gradient by {max(err, err_o):.1e}")
    flops = {"dense numpy": dense_flops(N, M, d, d_h, d_v), "dense numba": dense_flops(N, M, d, d_h, d_v),
             "span": span_flops(obj, N, M, d_h, d_v), "span numpy path": span_flops(obj, N, M, d_h, d_v)}
    print(f"  span basis: {obj.basis}, r = {obj.P.shape[1]} (n_u = {obj.tokens.n_unique} unique non-zero tokens);"
          f" validated against the dense gradient: max rel diff {err:.1e}")
    out["step"] = {}
    for key, fn in steps.items():
        t = best_time(fn, repeat)
        out["step"][key] = {"ms": t * 1e3, "gflops": flops[key] / t / 1e9, "gflop": flops[key] / 1e9}
        print(f"  step  {key:15s} {t * 1e3:8.2f} ms  {flops[key] / 1e9:7.3f} GFLOP  {flops[key] / t / 1e9:6.1f} GFLOP/s")
    if "span" in steps:
        t_loop = loop_step_time(lambda: make_objective(train_cfg.replace(**WAYS["span"]), p0, data.X, data.y),
                                train_cfg, repeat)
        flops["span via train"] = flops["span"]
        out["step"]["span via train"] = {"ms": t_loop * 1e3, "gflops": flops["span"] / t_loop / 1e9}
        print(f"  step  {'span via train':15s} {t_loop * 1e3:8.2f} ms  (loop included)  "
              f"{flops['span'] / t_loop / 1e9:6.1f} GFLOP/s")
        torch_step, torch_grads = torch_step_fn(p3, data.X, data.y, train_cfg.lr, train_cfg.train_w_O)
        if torch_step is not None:
            terr = max(rel_error(g, r) for g, r in zip(torch_grads, ref))
            if terr <= 1e-10:
                t = best_time(torch_step, repeat)
                out["step"]["torch autograd"] = {"ms": t * 1e3, "gflops": flops["dense numpy"] / t / 1e9}
                print(f"  step  {'torch autograd':15s} {t * 1e3:8.2f} ms  (float64, validated: max rel diff "
                      f"{terr:.1e})")
            else:
                print(f"  torch step REFUSED: its gradient differs from the dense one by {terr:.1e}")
        else:
            print("  torch not installed: no PyTorch step")
        n_u, r = obj.U_c.shape
        A2, out2 = np.ones((r, 2 * d_h)), np.empty((n_u, 2 * d_h))
        A1, out1 = np.ones((r, d_h)), np.empty((n_u, d_h))
        t_one = best_time(lambda: np.dot(obj.U_c, A2, out=out2), repeat)
        t_two = best_time(lambda: (np.dot(obj.U_c, A1, out=out1), np.dot(obj.U_c, A1, out=out1)), repeat)
        t_gemm = min(t_one, t_two)
        gemm_rate = 2 * 2 * n_u * r * d_h / t_gemm / 1e9
        out["step"]["dgemm"] = {"ms": t_gemm * 1e3, "gflops": gemm_rate, "one product ms": t_one * 1e3,
                                "two products ms": t_two * 1e3}
        print(f"  step  {'dgemm':15s} {t_gemm * 1e3:8.2f} ms  {gemm_rate:6.1f} GFLOP/s, the faster of one "
              f"({n_u}×{r})·({r}×{2 * d_h}) product ({t_one * 1e3:.2f} ms) and two ({n_u}×{r})·({r}×{d_h}) "
              f"({t_two * 1e3:.2f} ms)")
        for key in ("dense numpy", "dense numba", "torch autograd"):
            if key in out["step"]:
                for span_key in ("span", "span via train"):
                    ratio = out["step"][key]["ms"] / out["step"][span_key]["ms"]
                    out["step"][f"ratio {key}/{span_key}"] = ratio
                    print(f"  step  ratio {key} / {span_key}: {ratio:6.1f}x")
        for span_key in ("span", "span via train"):
            ratio = out["step"][span_key]["ms"] / out["step"]["dgemm"]["ms"]
            out["step"][f"ratio {span_key}/dgemm"] = ratio
            print(f"  step  ratio {span_key} / dgemm: {ratio:6.2f}x")
        out["step"]["profile"] = profile = step_profile(obj_t, state, out["step"], repeat)
        print("  step  profile of span via train, ms: " + ", ".join(f"{k} {v:.2f}" for k, v in profile.items()))
        if name == "Figure-1 cell":
            ok = out["step"]["span via train"]["ms"] <= 1.3 * out["step"]["dgemm"]["ms"]
            print(f"  target span via train ≤ 1.3× the dgemm floor: {'met' if ok else 'NOT met'}")
            if "torch autograd" in out["step"]:
                ok = out["step"]["torch autograd"]["ms"] >= 6 * out["step"]["span via train"]["ms"]
                print(f"  target span via train ≥ 6× faster than torch autograd: {'met' if ok else 'NOT met'}")

    # --- whole cell -------------------------------------------------------------------------------------------
    out["cell"] = {}
    for backend in ("numpy", "numba", "span"):
        # dense cells are slow and already warmed up by the step timing above: one run, unless asked for more
        reps = cell_repeat if backend == "span" else dense_cell_repeat
        if backend == "span":
            whole_cell(backend, data_cfg, model_cfg, train_cfg)              # warm-up
        runs = [whole_cell(backend, data_cfg, model_cfg, train_cfg) for _ in range(reps)]
        phases, hist = min(runs, key=lambda r: r[0]["total"])        # the best run, with its own breakdown
        out["cell"][backend] = {**phases, "steps": hist.steps, "status": hist.status,
                                "test_loss": hist.final_test_loss}
        detail = ", ".join(f"{k} {v * 1e3:.1f}" for k, v in phases.items() if k != "total" and "GFLOP" not in k)
        print(f"  cell  {backend:6s} {phases['total']:7.3f} s  ({hist.steps} steps, {hist.status}, "
              f"test loss {hist.final_test_loss:.4f}); ms: {detail}")
        if backend == "span":
            rates = ", ".join(f"{k} {phases['GFLOP ' + k]:.2f} GFLOP at {phases['GFLOP ' + k] / phases[k]:.0f} GFLOP/s"
                              for k in ("setup", "train steps", "test loss"))
            print(f"              products: {rates}")
    tl = [out["cell"][b]["test_loss"] for b in ("numpy", "numba", "span")]
    print(f"  cell  test losses agree to {max(tl) - min(tl):.1e} (absolute)")
    if name == "Figure-1 cell":
        ok = out["cell"]["span"]["total"] <= 0.12
        print(f"  target whole Figure-1 span cell ≤ 0.12 s: {'met' if ok else 'NOT met'}")
    for key in ("numpy", "numba"):
        ratio = out["cell"][key]["total"] / out["cell"]["span"]["total"]
        out["cell"][f"ratio {key}/span"] = ratio
        print(f"  cell  ratio dense {key} / span: {ratio:6.1f}x")
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=20, help="timed repetitions of one step")
    p.add_argument("--cell-repeat", type=int, default=5, help="timed repetitions of a whole span cell")
    p.add_argument("--dense-cell-repeat", type=int, default=1, help="timed repetitions of a whole dense cell")
    p.add_argument("--setting", choices=["all", "figure1", "dynamics"], default="all",
                   help="time both settings (default) or one")
    p.add_argument("--torch-threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    p.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    p.add_argument("--clock", choices=["wall", "process"], default="wall",
                   help="wall time, or CPU time of this process (use on a shared, loaded machine)")
    a = p.parse_args(argv)
    if a.torch_threads:
        try:
            import torch
            torch.set_num_threads(a.torch_threads)
        except ImportError:
            pass
    global CLOCK
    CLOCK = time.perf_counter if a.clock == "wall" else time.process_time
    threads = os.environ.get("OPENBLAS_NUM_THREADS", "unset")
    print(f"OPENBLAS_NUM_THREADS={threads}, cores={os.cpu_count()}, clock={a.clock}, "
          f"load average {os.getloadavg()[0]:.2f}")
    results = {"OPENBLAS_NUM_THREADS": threads, "clock": a.clock, "loadavg": os.getloadavg()[0], "settings": []}
    if a.setting in ("all", "figure1"):
        d1, m1, t1 = figure1_setting(N=20, mu_norm=80.0)
        results["settings"].append(bench("Figure-1 cell", d1, m1, t1, a.repeat, a.cell_repeat, a.dense_cell_repeat))
    if a.setting in ("all", "dynamics"):
        d2, m2, t2 = dynamics_setting(mu_norm=1.0)
        # the dynamics cell, like the Figure-1 cell, trains until the loss is < 0.01 (at most 1000 steps)
        t2 = t2.replace(steps=1000, loss_threshold=0.01)
        results["settings"].append(bench("dynamics setting", d2, m2, t2, a.repeat, a.cell_repeat,
                                         a.dense_cell_repeat))
    if a.json:
        save_json(a.json, results)
        print(f"\nwrote {a.json}")


if __name__ == "__main__":
    main()
