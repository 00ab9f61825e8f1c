"""Training: the loop (``trainer``) driving each epoch's plan (``epoch_plan``) over a
source of batches (``sources``, checked by ``data_adapter``), and what a step needs.

A step's math is ``passes``; the weights live in flat buffers (``parameters``) and the
per-batch-size buffers in ``buffer_cache``; ``captured_steps`` replays steps as graphs;
``nan_guard`` stops at a non-finite loss; ``replica`` is how training across ranks plugs
in; ``options`` carries fit's arguments; ``interrupt`` handles Ctrl-C."""
