# refvit/adapters/jax_adapter.py
r"""A JAX implementation of the model, wrapped for ``refvit.crosscheck``. Copy this file and put your model in place
of ``f_jax``; JAX is not a dependency of refvit, so install it yourself.

The forward is written directly: logits x_lᵀ W_Q W_Kᵀ x_j, softmax over the keys j without 1/√d_h, the mean over
the M queries; the loss is the mean log(1 + e^{−y f}), differentiated by ``jax.value_and_grad``. The GD step keeps
w_O frozen (the check's default). Arrays keep the dtype they arrive in, so the same code is checked in float64 and
in float32; the ``jax_enable_x64`` line is what makes float64 inputs stay float64 (without it JAX computes them in
float32 and the float64 check names ``float32_accumulation``).

From the shell (exit status 0 = pass, 1 = incorrect, 3 = correct but not robust):

    refvit crosscheck refvit/adapters/jax_adapter.py:forward --grad refvit/adapters/jax_adapter.py:grad \
        --step refvit/adapters/jax_adapter.py:gd_step [--dtype float32] [--json report.json]

From Python:

    from refvit.crosscheck import crosscheck
    report = crosscheck(forward, grad, gd_step)                    # or dtype="float32"
"""
import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)   # without it JAX computes float64 inputs in float32


def f_jax(W_Q, W_K, W_V, w_O, X):                      # X: (n, M, d)
    Z = (X @ W_Q) @ jnp.swapaxes(X @ W_K, 1, 2)        # (n, M, M) logits x_lᵀ W_Q W_Kᵀ x_j
    S = jax.nn.softmax(Z, axis=-1)                     # over the keys j, no 1/√d_h
    return (S @ (X @ W_V @ w_O)[..., None])[..., 0].mean(axis=1)   # (n,), mean over the M queries


def loss_jax(params, X, y):
    return jnp.mean(jnp.logaddexp(0.0, -y * f_jax(*params, X)))  # mean log(1 + e^{-y f})


_f = jax.jit(f_jax)
_vg = jax.jit(jax.value_and_grad(loss_jax))


def forward(W_Q, W_K, W_V, w_O, X):
    return np.asarray(_f(W_Q, W_K, W_V, w_O, X))


def grad(W_Q, W_K, W_V, w_O, X, y):
    loss, g = _vg((W_Q, W_K, W_V, w_O), X, y)
    return (float(loss), *(np.asarray(a) for a in g))


def gd_step(W_Q, W_K, W_V, w_O, X, y, lr):
    _, (dW_Q, dW_K, dW_V, _) = _vg((W_Q, W_K, W_V, w_O), X, y)
    return (np.asarray(W_Q - lr * dW_Q), np.asarray(W_K - lr * dW_K), np.asarray(W_V - lr * dW_V),
            w_O)                                       # w_O frozen (math §3)
