"""Shared test problems: the three regimes every gradient check runs in (imported by the test modules)."""
from refvit import DataConfig, ModelConfig, init_params, make_dataset, streams, train


def small_problem(init: str, sigma0: float = 1e-3, seed: int = 0):
    data_cfg = DataConfig(N=4, M=4, d=8, mu_norm=3.0, sigma_p=1.0, sigma_w=0.3, n_test=2)
    rng = streams(seed)
    data = make_dataset(data_cfg, rng.data, rng.test)
    params = init_params(ModelConfig(d_h=4, d_v=3, init=init, init_scale=16.0, sigma0=sigma0), 8, rng.init)
    return params, data.X, data.y


def trained_problem():
    """A characteristic point after 50 GD steps from an O(1)-logit init (CS231n's 'after a short burn-in')."""
    params, X, y = small_problem("gaussian", sigma0=0.5)
    params, hist = train(params, X, y, lr=0.1, steps=50, backend="numpy")
    assert hist.steps == 50 and hist.status == "max_steps"
    return params, X, y


REGIMES = {
    "paper_tiny_init": lambda: small_problem("torch_uniform_scaled"),
    "O1_logits": lambda: small_problem("gaussian", sigma0=0.5),
    "after_50_steps": trained_problem,
}


def table_row(**values) -> dict:
    """A row of a sweep table with every column of ``refvit.results.COLUMNS``: the given values, and placeholders
    (zeros, status from ``converged``) for the columns a test does not look at."""
    from refvit.results import COLUMNS
    row = {c: 0.0 for c in COLUMNS}
    row.update(N=2, repeat=0, seed=0, steps=1, converged=True)
    row.update(values)
    if "status" not in values:
        row["status"] = "converged" if row["converged"] else "max_steps"
    return {c: row[c] for c in COLUMNS}
