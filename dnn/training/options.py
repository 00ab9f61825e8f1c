"""``fit``'s options, checked once and carried as one object (``FitOptions``) from
``Sequential.fit`` to the training loop."""
from __future__ import annotations

import dataclasses

from ..utils.validation import (check_bool, check_choice, check_nonnegative_int,
                                check_number_in, check_positive_int)

CUDA_GRAPH_CHOICES = ("auto", True, False)
VERBOSE_CHOICES = (0, 1, 2, "auto")


@dataclasses.dataclass
class FitOptions:
    """See ``Sequential.fit``. ``batch_size`` None: 32 for arrays, and what a batch
    source makes for batch sources (the data adapter settles it);
    ``validation_batch_size`` None means ``batch_size``, as in Keras."""

    epochs: int = 1
    batch_size: int | None = None
    validation_split: float = 0.0
    validation_data: object = None
    validation_batch_size: int | None = None
    shuffle: bool = True
    verbose: object = 1
    callbacks: list = dataclasses.field(default_factory=list)
    initial_epoch: int = 0
    terminate_on_nan: bool = True
    cuda_graph: object = "auto"
    steps_per_epoch: int | None = None
    validation_steps: int | None = None
    shard: bool = False

    def __post_init__(self):
        self.epochs = check_nonnegative_int(self.epochs, "epochs")
        if self.batch_size is not None:
            self.batch_size = check_positive_int(self.batch_size, "batch_size")
        self.initial_epoch = check_nonnegative_int(self.initial_epoch, "initial_epoch")
        check_choice(self.verbose, "verbose", VERBOSE_CHOICES)
        check_number_in(self.validation_split, "validation_split", 0, 1, "[)")
        check_choice(self.cuda_graph, "cuda_graph", CUDA_GRAPH_CHOICES)
        self.shuffle = check_bool(self.shuffle, "shuffle")
        self.terminate_on_nan = check_bool(self.terminate_on_nan, "terminate_on_nan")
        self.shard = check_bool(self.shard, "shard")
        for name in ("validation_batch_size", "steps_per_epoch", "validation_steps"):
            if getattr(self, name) is not None:
                setattr(self, name, check_positive_int(getattr(self, name), name))
        if self.callbacks is None:
            self.callbacks = []
        elif not isinstance(self.callbacks, (list, tuple)):
            raise TypeError(f"callbacks: expected a list of dnn.callbacks.Callback; got "
                            f"{type(self.callbacks).__name__}")
        self.callbacks = list(self.callbacks)

    def for_arrays(self):
        """Settle the batch sizes for array data: 32 when not given, as Keras."""
        if self.batch_size is None:
            self.batch_size = 32
        if self.validation_batch_size is None:
            self.validation_batch_size = self.batch_size

    def agreed_values(self):
        """The options every rank must share in data-parallel training, as integers
        (-1 for None)."""
        def value(v):
            return -1 if v is None else int(v)

        return {"batch_size": value(self.batch_size), "epochs": self.epochs,
                "initial_epoch": self.initial_epoch, "shuffle": int(self.shuffle),
                "validation_batch_size": value(self.validation_batch_size),
                "cuda_graph": CUDA_GRAPH_CHOICES.index(self.cuda_graph),
                "steps_per_epoch": value(self.steps_per_epoch),
                "validation_steps": value(self.validation_steps), "shard": int(self.shard)}
