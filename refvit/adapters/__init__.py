"""Importable implementations of the model that pass ``refvit crosscheck``, as starting points: the same files as
``refvit/adapters/torch_adapter.py`` and ``refvit/adapters/jax_adapter.py`` (the tests keep them identical).

    from refvit.adapters.torch_adapter import forward, grad, gd_step, make_trainer     # needs torch
    from refvit.adapters.jax_adapter import forward, grad, gd_step                     # needs jax
    from refvit.adapters.torch_li_adapter import forward, grad, step, make_trainer  # the second setting, torch

Neither framework is a dependency of refvit; importing a module without its framework raises ImportError.
"""
