"""Training one architecture in this process: the data sets (``data``, the entry point, over one
module per data set in ``datasets``), per-batch augmentation (``augment``), the trainer
(``trainer``), its checkpoint format (``checkpoint``), where a run's weights start (``start``),
exported architecture files and their weights (``exported``), data-parallel runs over
``torch.distributed`` (``parallel``) and the one seed rule (``seeds``). Knows neither Optuna nor
Ray: a trial (``search.jobs.trial``) and the benchmarks call it the same way. Imports only
``search.store``. Nothing is imported here: import the modules."""

__all__ = ["augment", "checkpoint", "data", "datasets", "exported", "parallel", "seeds", "start",
           "trainer"]
