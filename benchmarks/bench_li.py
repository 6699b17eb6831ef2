"""The second setting's training step and test evaluation: the sparse path, the reference and PyTorch, in one run.

    python benchmarks/bench_li.py                                  # BLAS and torch threads as installed
    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_li.py --torch-threads 1   # everything on one core
    python benchmarks/bench_li.py --json results/bench_li.json     # also save the numbers

Sizes: N = 20, d = 2000, m_k = m_v = 10, sparse noise s = 40, n_test = 2000 (the defaults of ``LiDataConfig`` and
``LiModelConfig``), seed 0, at the state after 3 SignGD steps (a generic non-zero state). Per step:

    sparse step        the objective ``refvit.li2025.objective.train`` builds by default (TrainConfig.backend
                       "auto": ``SparseLiObjective``): loss and gradients, then the trainer's SignGD update
    reference step     the same with ``LiObjective`` (the dense reference model)
    torch step         a PyTorch float64 autograd step of the same model, written below: forward, loss, backward,
                       SignGD update (when torch is installed)
    ... via run        a step through ``refvit.trainer.run`` with its history row, finiteness check and update:
                       (time of S + 1 steps − time of 1 step) / S, without a test set
    of which ...       the sparse step's loss and gradients, its SignGD update, and the history row that a step
                       through ``run`` adds (``record``: the tracked quantities of docs/math.md §14.1)
    test evaluation    f on the 2000 test samples, sparse and reference; the first sparse call, which also puts
                       the test tokens in sparse form (once per objective), is printed apart

Every path is validated before it is timed, or it is not timed: the sparse loss, f, cache and gradients against the
reference (norm-wise relative ≤ 1e-12, the tolerance of tests/test_li_sparse.py), the torch gradients against the
reference (≤ 1e-10), the sparse test outputs against the reference ones (≤ 1e-12). Times are medians over
``--repeat`` runs after one warm-up (numba compilation, BLAS buffers); all ratios come from this one run. Target
(printed met or not): the sparse step ≥ 3× faster than the torch step.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from refvit.config import TrainConfig
from refvit.io import save_json
from refvit.li2025 import LiDataConfig, LiModelConfig, LiParams, init_params, make_dataset
from refvit.li2025.model import forward_cache, loss_grads_cache
from refvit.li2025.objective import LiObjective, SparseLiObjective, make_objective
from refvit.optimizers import Optimizer
from refvit.streams import streams
from refvit.trainer import run

VALID = 1e-12          # sparse against reference: the tolerance of tests/test_li_sparse.py
TORCH_VALID = 1e-10    # torch autograd against the reference (another summation order in every product)
TARGET = 3.0           # the sparse step is to be ≥ 3× faster than the torch step
CLOCK = time.perf_counter


def rel_diff(a, b) -> float:
    """max |a − b| / max |b| (norm-wise, as in tests/test_li_sparse.py)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = np.max(np.abs(b), initial=0.0)
    return float(np.max(np.abs(a - b), initial=0.0) / scale) if scale > 0 else float(np.max(np.abs(a - b)))


def median_time(fn, repeat: int) -> float:
    fn()                                                   # warm-up: numba compilation, BLAS buffers, page faults
    times = []
    for _ in range(repeat):
        t0 = CLOCK()
        fn()
        times.append(CLOCK() - t0)
    return float(np.median(times))


def torch_step_fn(params: LiParams, X, y, model: LiModelConfig, lr: float):
    """(step, gradients at ``params``) of the same model in PyTorch float64 autograd, or (None, None) without torch.

    f = c_L Σ_l Σ_m softmax_m(λ Q Kᵀ)[l, m]·u_m, Q = X W_Qᵀ, K = X W_Kᵀ, u = X v, v = mean W_V[0] − mean W_V[1];
    loss = mean softplus(−y f); the step updates every block by −lr·sign(grad) (SignGD).
    """
    try:
        import torch
    except ImportError:
        return None, None
    tX, ty = torch.tensor(X), torch.tensor(y)
    c, lam = model.c(X.shape[1]), model.logit_scale

    def loss_of(W_Q, W_K, W_V):
        Q, K = tX @ W_Q.T, tX @ W_K.T                                     # (n, L, m_k)
        S = torch.softmax(lam * Q @ K.transpose(1, 2), dim=-1)            # (n, L, L) softmax over keys
        u = tX @ (W_V[0].mean(dim=0) - W_V[1].mean(dim=0))                # (n, L)
        f = c * (S * u.unsqueeze(1)).sum(dim=(1, 2))                      # (n,)
        return torch.nn.functional.softplus(-ty * f).mean()

    tp = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in params]

    def step():
        for t in tp:
            t.grad = None
        loss_of(*tp).backward()
        with torch.no_grad():
            for t in tp:
                t -= lr * torch.sign(t.grad)

    w = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in params]
    loss_of(*w).backward()
    return step, [t.grad.numpy() for t in w]


def objective_step_fn(obj, state, cfg: TrainConfig):
    """One training step of ``obj`` as the trainer takes it: loss and gradients, then the optimizer's update."""
    work = [np.array(a, copy=True) for a in state]
    opt = Optimizer(cfg, work)
    trainable = [True] * len(work)

    def step():
        grads = obj.value_and_grad(LiParams(*work))[1]
        opt.step(work, grads, trainable, 0)
    return step


def via_run_time(make, cfg: TrainConfig, repeat: int, steps: int = 200) -> float:
    """Per-step time through ``refvit.trainer.run``: (time of steps + 1 steps − time of 1 step) / steps."""
    t_s = median_time(lambda: run(make(), cfg.replace(steps=steps + 1)), repeat)
    t_1 = median_time(lambda: run(make(), cfg.replace(steps=1)), repeat)
    return (t_s - t_1) / steps


def validate_sparse(fast, ref) -> float:
    """Largest norm-wise relative difference over loss, f, every gradient block and every cache field."""
    parts = [abs(fast.loss - ref.loss) / abs(ref.loss), rel_diff(fast.f, ref.f)]
    parts += [rel_diff(a, b) for a, b in zip(fast.grads, ref.grads)]
    parts += [rel_diff(a, b) for a, b in zip(fast.cache, ref.cache)]
    return max(parts)


def bench(repeat: int, test_repeat: int, run_repeat: int, lr: float = 1e-3) -> dict:
    data_cfg, model = LiDataConfig(), LiModelConfig()
    st = streams(0)
    data = make_dataset(data_cfg, st.data, st.test)
    p0 = init_params(model, data_cfg.d, st.init)
    cfg = TrainConfig(optimizer="signgd", lr=lr, steps=3)
    state, _ = run(LiObjective(p0, data, model, test=False), cfg)      # the state after 3 SignGD steps
    print(f"N={data_cfg.N}, d={data_cfg.d}, m_k={model.m_k}, m_v={model.m_v}, s={data_cfg.s}, "
          f"n_test={data_cfg.n_test}; SignGD lr={lr:g}, at the state after 3 steps")
    out = {"N": data_cfg.N, "d": data_cfg.d, "m_k": model.m_k, "m_v": model.m_v, "s": data_cfg.s,
           "n_test": data_cfg.n_test, "ms": {}}
    ms = out["ms"]

    fast = make_objective(p0, data, model, "auto")                     # what training builds by default
    ref = LiObjective(p0, data, model)
    steps, tests = {}, {}
    err = validate_sparse(fast.value_and_grad(state), loss_grads_cache(state, data.X, data.y, model))
    if isinstance(fast, SparseLiObjective) and err <= VALID:
        steps["sparse step"] = objective_step_fn(fast, state, cfg)
        print(f"  sparse path validated against the reference: max rel diff {err:.1e} (loss, f, cache, gradients)")
    else:
        print(f"  sparse step REFUSED: objective {type(fast).__name__}, max rel diff {err:.1e} > {VALID:g}")
    steps["reference step"] = objective_step_fn(ref, state, cfg)
    torch_step, torch_grads = torch_step_fn(state, data.X, data.y, model, lr)
    if torch_step is None:
        print("  torch not installed: no PyTorch step")
    else:
        import torch
        terr = max(rel_diff(g, r) for g, r in zip(torch_grads, loss_grads_cache(state, data.X, data.y, model).grads))
        if terr <= TORCH_VALID:
            steps["torch step"] = torch_step
            print(f"  torch step validated: max rel diff of its gradients {terr:.1e}; "
                  f"torch threads {torch.get_num_threads()}")
        else:
            print(f"  torch step REFUSED: its gradients differ from the reference by {terr:.1e}")

    if "sparse step" in steps:
        t0 = CLOCK()
        f_fast = fast.test_outputs(state)                  # builds the sparse test tokens (once), then evaluates
        ms["first sparse test evaluation"] = (CLOCK() - t0) * 1e3
        terr = rel_diff(f_fast, forward_cache(state, data.X_test, model)[0])
        if terr <= VALID:
            tests["sparse test evaluation"] = lambda: fast.test_outputs(state)
            print(f"  sparse test evaluation validated: max rel diff {terr:.1e}")
        else:
            print(f"  sparse test evaluation REFUSED: max rel diff {terr:.1e} > {VALID:g}")
    tests["reference test evaluation"] = lambda: ref.test_outputs(state)

    for key, fn in steps.items():
        ms[key] = median_time(fn, repeat) * 1e3
    if "sparse step" in steps:   # where the sparse step and its loop go: evaluation, update, history row
        ev = fast.value_and_grad(state)
        work = [np.array(a, copy=True) for a in state]
        opt = Optimizer(cfg, work)
        parts = {"  of which loss and gradients": lambda: fast.value_and_grad(state),
                 "  of which SignGD update": lambda: opt.step(work, ev.grads, [True] * 3, 0),
                 "  history row (record)": lambda: fast.record(ev.loss, ev.f, ev.cache)}
        for key, fn in parts.items():
            ms[key] = median_time(fn, repeat) * 1e3
    run_cfg = cfg.replace(steps=1)
    if "sparse step" in steps:
        ms["sparse step via run"] = via_run_time(lambda: make_objective(p0, data, model, "auto", test=False),
                                                 run_cfg, run_repeat) * 1e3
    ms["reference step via run"] = via_run_time(lambda: LiObjective(p0, data, model, test=False),
                                                run_cfg, run_repeat) * 1e3
    for key, fn in tests.items():
        ms[key] = median_time(fn, test_repeat) * 1e3
    for key, t in ms.items():
        print(f"  {key:30s} {t:9.3f} ms")

    ratios = out["ratios"] = {}
    pairs = [("torch step", "sparse step"), ("torch step", "sparse step via run"),
             ("reference step", "sparse step"), ("reference step via run", "sparse step via run"),
             ("reference test evaluation", "sparse test evaluation")]
    for slow, quick in pairs:
        if slow in ms and quick in ms:
            ratios[f"{slow} / {quick}"] = ms[slow] / ms[quick]
            print(f"  ratio {slow} / {quick}: {ms[slow] / ms[quick]:6.1f}x")
    for quick in ("sparse step", "sparse step via run"):
        key = f"torch step / {quick}"
        if key in ratios:
            met = ratios[key] >= TARGET
            out[f"target {quick}"] = met
            print(f"  target {quick} ≥ {TARGET:g}× faster than the torch step: {'met' if met else 'NOT met'} "
                  f"({ratios[key]:.1f}×)")
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeat", type=int, default=200, help="timed repetitions of one step")
    p.add_argument("--test-repeat", type=int, default=20, help="timed repetitions of one test evaluation")
    p.add_argument("--run-repeat", type=int, default=9, help="timed repetitions of a run (for the steps via run)")
    p.add_argument("--torch-threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    p.add_argument("--clock", choices=["wall", "process"], default="wall",
                   help="wall time, or CPU time of this process (on a shared, loaded machine)")
    p.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    a = p.parse_args(argv)
    global CLOCK
    CLOCK = time.perf_counter if a.clock == "wall" else time.process_time
    if a.torch_threads:
        try:
            import torch
            torch.set_num_threads(a.torch_threads)
        except ImportError:
            pass
    threads = os.environ.get("OPENBLAS_NUM_THREADS", "unset")
    print(f"OPENBLAS_NUM_THREADS={threads}, cores={os.cpu_count()}, clock={a.clock}, "
          f"load average {os.getloadavg()[0]:.2f}")
    out = bench(a.repeat, a.test_repeat, a.run_repeat)
    out.update({"OPENBLAS_NUM_THREADS": threads, "clock": a.clock, "loadavg": os.getloadavg()[0]})
    if a.json:
        save_json(a.json, out)
        print(f"\nwrote {a.json}")


if __name__ == "__main__":
    main()
