"""The three gradient checks that need no second implementation, run on refvit's loss. To check your own code,
put your loss and gradient in place of ``loss``, ``grad`` and ``complex_loss``: any function of one float64 array
or of a tuple of them. Run: python examples/gradient_checks.py (exit status 0 when all three pass)."""
import numpy as np

from refvit import DataConfig, ModelConfig, gradcheck, init_params, loss_and_grads, make_dataset, streams
from refvit.jiang2024.model import forward_cache

# a small problem at O(1) logits (Gaussian init, σ0 = 0.5), where wrong gradients show
data_cfg = DataConfig(N=4, M=4, d=8, mu_norm=3.0, sigma_p=1.0, sigma_w=0.3, n_test=2)
rng = streams(0)
data = make_dataset(data_cfg, rng.data, rng.test)
X, y = data.X, data.y
params = init_params(ModelConfig(d_h=4, d_v=3, init="gaussian", sigma0=0.5), data_cfg.d, rng.init)


def loss(p):            # p: Params, a tuple of four arrays
    return loss_and_grads(p, X, y)[0]


def grad(p):            # the gradient, the same structure as p
    return loss_and_grads(p, X, y)[1]


def complex_loss(p):    # complex-safe: log1p(exp(−z)) instead of logaddexp, which refuses complex input
    return np.mean(np.log1p(np.exp(-y * forward_cache(p, X)[0])))


def main() -> int:
    g = grad(params)
    t = gradcheck.taylor_check(loss, g, params, np.random.default_rng(0))
    print(f"Taylor remainder: slope {t.slope:.3f} over {t.decades:g} decades (pass: within 0.2 of 2)")
    a, b = gradcheck.hessian_symmetry_check(grad, params, np.random.default_rng(1))
    sym = gradcheck.rel_error(a, b)
    print(f"Hessian symmetry: uᵀHv {a:.10g}, vᵀHu {b:.10g}, relative difference {sym:.1e} (pass: < 1e-6)")
    a, b = gradcheck.complex_step_check(complex_loss, g, params, np.random.default_rng(2))
    err = abs(a - b) / np.sqrt(sum(np.sum(q * q) for q in g))
    print(f"complex step: ⟨∇L, v⟩ {a:.16g}, Im L(θ + ihv)/h {b:.16g}, error {err:.1e} of ‖∇L‖ (pass: ≤ 1e-13)")
    return 0 if (t.passed and sym < 1e-6 and err <= 1e-13) else 1


if __name__ == "__main__":
    raise SystemExit(main())
