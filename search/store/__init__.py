"""The study database: what a search keeps and what every reader reads.

``records`` spells every trial and study attribute (the one module writers and readers share);
``storage`` opens Optuna's storage (SQLite or PostgreSQL) and keeps it across dropped
connections (``reconnecting``); ``latency_table`` holds the measured layer latencies next to
the studies; ``files`` writes every file atomically. The dashboards import this package (and
``search.cli``, the command-line pattern) and nothing else of ``search``; ``records``,
``storage`` and ``files`` need neither torch nor Ray.
"""
