"""Latency profiling: each searchable layer timed in its deploy form on this machine, stored in
the latency table (``search.store.latency_table``) and turned into a ``space.LatencyModel``.
Nothing is imported here: import the modules."""

__all__ = ["profiler"]
