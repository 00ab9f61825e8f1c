"""Training: the loop (``trainer``) driving each epoch's plan (``epoch_plan``) over a
source of batches (``sources``, made from what fit is given by ``data_adapter``).

Sources: arrays on the device (``sources``), host arrays and memmaps streamed by loader
threads (``host_source``), a user's batches (``batch_sources``, each read by
``batch_reader``), with the checks of ``checks``; the loaders (``prefetch``) fill
staging slots (``staging``) that the feeds (``stream_feed``) land on the device;
``fingerprint`` tells ranks whether they hold the same data. A step's math is
``passes``; the weights live in flat buffers (``parameters``) and the per-batch-size
buffers in ``buffer_cache``; ``captured_steps`` replays steps as graphs; ``nan_guard``
stops at a non-finite loss; ``replica`` is how training across ranks plugs in;
``options`` carries fit's arguments; ``interrupt`` handles Ctrl-C."""
from .host_source import Rows

__all__ = ["Rows"]
