"""The search engine of the standard strategy: its settings (``settings``), the budgets
(``budgets``), Optuna's proposals screened against them (``proposer``), the Ray Tune searcher
that hands them out (``searcher``), the study they are kept in (``study``), the confirmation
stage (``confirmation``), what a person reads while it runs (``console``) and the study's best
architecture written to files (``best``). Imports ``store``, ``training``, ``jobs`` and
``profiling``; the one-shot strategy builds on it, the driver (``search.driver``) runs it.
Nothing is imported here: import the modules."""

__all__ = ["best", "budgets", "confirmation", "console", "proposer", "searcher", "settings",
           "study"]
