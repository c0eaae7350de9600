"""The study database: what a search keeps and what every reader reads.

``records`` spells every trial and study attribute (the one module writers and readers share);
``objectives`` says what a study optimises; ``storage`` opens Optuna's storage (SQLite or
PostgreSQL) and keeps it across dropped connections (``reconnecting``), with the database setup
it shares with ``latency_table`` (the measured layer latencies next to the studies) in
``database``; ``studies`` finds a study by name or the newest; ``files`` writes every file
atomically; ``lease`` keeps one live driver per study. The dashboards import this package (and
``search.cli``, the command-line pattern) and nothing else of ``search``; all of it but
``latency_table`` needs neither torch nor Ray. Nothing is imported here: import the modules.
"""

__all__ = ["agreement", "database", "files", "latency_table", "lease", "objectives", "paired",
           "reconnecting", "records", "storage", "studies", "uncertainty", "verdict"]
