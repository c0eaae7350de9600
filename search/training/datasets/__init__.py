"""One module per data set (``digits``, ``cifar``, ``imagefolder``, ``fashion_mnist``), each
with its constants, its checks and its loader, offered as a :class:`~.splits.Loader`; what they
share lies in ``splits`` (the split types, splitting, resizing, statistics) and ``downloads``
(data directories, the per-user cache, checked downloads). Callers use
``search.training.data``."""
