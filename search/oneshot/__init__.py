"""The one-shot strategy: train one HetConv supernet, estimate thousands of candidates with it,
then train the best few stand-alone (``docs/ONESHOT.md``). Imports ``engine``, ``jobs``,
``training`` and ``store``. Nothing is imported here: import the modules."""

__all__ = ["estimates", "sandwich", "strategy", "supernet_trial"]
