"""Per-step time of the dense training step, per backend, in the paper's two settings.

    python benchmarks/bench_dense.py                          # BLAS may use both cores
    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_dense.py   # one core

Every backend is validated against the numpy reference before it is timed (refused if it differs by > 1e-12),
and all ratios are measured in this one run. "naive" is the textbook step that forms X·W_V (n M × d_v) for the
value path; refvit's step needs only u = W_V w_O (docs/math.md (2.2), (5.2)).
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from refvit import Params, dynamics_setting, figure1_setting, init_params, make_dataset, streams
from refvit.gradcheck import rel_error
from refvit.jiang2024.model import loss_grads_cache, logistic_loss_derivative, mean_loss, softmax


def naive_loss_and_grads(params: Params, X, y):
    """Textbook step: values X W_V (n, M, d_v) then w_O; gradients through X W_V. Same maths, more FLOPs."""
    W_Q, W_K, W_V, w_O = params
    n, M, d = X.shape
    Q, K, V = X @ W_Q, X @ W_K, X @ W_V                      # (n, M, d_h), (n, M, d_h), (n, M, d_v)
    S = softmax(Q @ K.transpose(0, 2, 1))
    H = S @ V                                                # (n, M, d_v) attention output
    f = H.mean(axis=1) @ w_O
    df = logistic_loss_derivative(y * f) * y / n
    dH = np.broadcast_to((df[:, None] / M)[:, :, None] * w_O, H.shape)
    dV = S.transpose(0, 2, 1) @ dH
    dS = dH @ V.transpose(0, 2, 1)
    dZ = S * (dS - (S * dS).sum(-1, keepdims=True))
    Xf = X.reshape(n * M, d)
    return mean_loss(f, y), Params(Xf.T @ (dZ @ K).reshape(n * M, -1), Xf.T @ (dZ.transpose(0, 2, 1) @ Q).reshape(n * M, -1),
                                   Xf.T @ dV.reshape(n * M, -1), (H.mean(axis=1) * df[:, None]).sum(0))


def step_flops(n, M, d, d_h, d_v, naive=False):
    """Multiply-adds × 2 of one loss-and-gradient evaluation."""
    qk = 2 * 2 * n * M * d * d_h * 2          # X W_Q, X W_K and their transposes in the backward
    attn = 2 * 3 * n * M * M * d_h            # logits, dQ, dK
    value = 2 * (3 * n * M * d * d_v + 2 * n * M * M * d_v) if naive else 2 * (d * d_v + 2 * n * M * d + d * d_v)
    return qk + attn + value


def timeit(fn, repeat):
    fn()                                      # warm-up (numba compilation, BLAS buffers)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def bench(name, data_cfg, model_cfg, repeat):
    rng = streams(0)
    data = make_dataset(data_cfg.replace(n_test=2), rng.data, rng.test)
    params = init_params(model_cfg, data_cfg.d, rng.init)
    X, y = data.X, data.y
    n, M, d = X.shape
    ref_loss, ref, _, _ = loss_grads_cache(params, X, y, "numpy")
    steps = {
        "numpy": lambda: loss_grads_cache(params, X, y, "numpy")[:2],
        "numba": lambda: loss_grads_cache(params, X, y, "numba")[:2],
        "naive": lambda: naive_loss_and_grads(params, X, y),
    }
    print(f"\n{name}: N={n}, M={M}, d={d}, d_h={model_cfg.d_h}, d_v={model_cfg.d_v}")
    times = {}
    for key, fn in steps.items():
        loss, grads = fn()
        err = max(rel_error(a, b) for a, b in zip(grads, ref))
        if err > 1e-12 or abs(loss - ref_loss) > 1e-12:
            print(f"  {key:6s} REFUSED: differs from the numpy reference by {err:.1e}")
            continue
        times[key] = timeit(fn, repeat)
        fl = step_flops(n, M, d, model_cfg.d_h, model_cfg.d_v, naive=(key == "naive"))
        print(f"  {key:6s} {times[key] * 1e3:8.2f} ms/step  {fl / times[key] / 1e9:6.1f} GFLOP/s  "
              f"(max rel diff to numpy {err:.1e})")
    if "numba" in times:
        print(f"  ratio numpy/numba time: {times['numpy'] / times['numba']:.2f}x (>1: numba faster)")
    if "naive" in times:
        print(f"  ratio naive/refvit-numpy time: {times['naive'] / times['numpy']:.2f}x (saving of u = W_V w_O)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=20)
    a = p.parse_args(argv)
    print(f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}, cores={os.cpu_count()}")
    d1, m1, _ = figure1_setting(N=20, mu_norm=80.0)
    bench("Figure-1 cell", d1, m1, a.repeat)
    d2, m2, _ = dynamics_setting(mu_norm=1.0)
    bench("dynamics setting", d2, m2, a.repeat)


if __name__ == "__main__":
    main()
