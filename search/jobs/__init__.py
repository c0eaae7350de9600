"""The work Ray runs: a search's trial (``trial``, a Ray Tune function trainable), data-parallel
Ray Train jobs (``ray_train``), the final training of an exported architecture (``final``, what
``search.train`` runs), and what the driver and a trial say to each other (``protocol``).
Imports ``training`` and ``store``. Nothing is imported here: import the modules."""

__all__ = ["final", "protocol", "ray_train", "trial"]
