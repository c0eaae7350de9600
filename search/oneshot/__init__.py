"""The one-shot strategy: train one HetConv supernet, estimate thousands of candidates with it,
then train the best few stand-alone (``docs/ONESHOT.md``)."""
