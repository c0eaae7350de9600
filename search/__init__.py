"""The search: the commands users run at the top level (``python -m search.run``, ``export``,
``check``, ``train``, ``deploy``, ``profile``; ``cli`` is what they share), the driver of a
search (``driver``) and the Ray cluster they run on (``cluster``).

The library halves live in subpackages, one floor above the other, none importing this top
level: ``store`` (what a search keeps: the database) -> ``training`` (one training run) and
``profiling`` (layer latencies) -> ``jobs`` (what Ray runs) -> ``engine`` (the standard
strategy) -> ``oneshot`` (the supernet strategy). ``docs/ARCHITECTURE.md`` walks a search
through the modules. Nothing is imported here, so ``import search.store`` stays free of torch
and Ray.
"""

__all__ = ["check", "cli", "cluster", "deploy", "driver", "export", "profile", "run", "train"]
