"""The search: settings, the Ray Tune cluster, Optuna's proposals under the budgets, and the
commands users run (``python -m search.run``, ``export``, ``check``, ``profile``).

Subpackages: ``store`` (what a search keeps: the database), ``training`` (one training run),
``profiling`` (layer latencies). ``docs/ARCHITECTURE.md`` walks a search through the modules.
Nothing is imported here, so ``import search.store`` stays free of torch and Ray.
"""

__all__: list[str] = []
