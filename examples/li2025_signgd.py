# examples/li2025_signgd.py
"""Train the second setting (the two-token transformer of Li et al.) by SignGD and find its four stages.

Run: python examples/li2025_signgd.py
"""
import numpy as np

from refvit.li2025 import LiDataConfig, LiModelConfig, init_params, make_dataset, train
from refvit.li2025.stages import detect_stages
from refvit.streams import streams


def main() -> int:
    data_cfg, model_cfg = LiDataConfig(mu_norm=0.02), LiModelConfig()     # n=20, d=2000, s=40, m_k=m_v=10
    rng = streams(0)                                                       # data, test and init streams
    data = make_dataset(data_cfg, rng.data, rng.test)
    params0 = init_params(model_cfg, data_cfg.d, rng.init)
    params, history = train(params0, data, model_cfg, optimizer="signgd", lr=1e-3, steps=900,
                            history_every=0, history_per_decade=20)        # a log-spaced history
    stages = detect_stages(history.values, history.step)
    print(f"SignGD, 900 steps: train loss {history.final_train_loss:.3g}, test loss {history.final_test_loss:.3g}, "
          f"test error {history.final_test_error:.3f}")
    print("stage boundaries (step, censored):", {k: tuple(getattr(stages, k)[:2]) for k in ("t1", "t2", "t3", "t4")})
    print(f"mean s_21 at the end: {np.mean(history['s21'][-1]):.2g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
