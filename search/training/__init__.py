"""Training one architecture: the data sets (``data``), per-batch augmentation (``augment``) and
the trainer with its checkpoint format (``trainer``). Knows neither Optuna nor Ray: a trial
(``search.trainable``) and the benchmarks call it the same way."""
