"""Training one architecture: the data sets (``data``, the entry point, over one module per data
set in ``datasets``), per-batch augmentation (``augment``), the trainer (``trainer``) and its
checkpoint format (``checkpoint``). Knows neither Optuna nor Ray: a trial (``search.trainable``)
and the benchmarks call it the same way."""
