"""How training across processes plugs into the loop: one object, the model's replica.

The training loop calls the replica at fixed points of a step and of an epoch, and never
asks whether training is data-parallel (ChainerMN hides it the same way, inside an
optimizer wrapper). ``Replica`` itself is a world of one, where every hook is a no-op;
``dnn.distributed`` implements the same interface across ranks. A ``Strategy`` makes a
model's replica when the model is compiled with it.
"""
from __future__ import annotations


class Strategy:
    """What ``compile(distribute=)`` takes: ``attach(model)`` returns the model's
    ``Replica``."""

    def attach(self, model):
        raise NotImplementedError


class Replica:
    """One model's part in training, in a world of one rank: see the module docstring.

    The hooks, in the order a step calls them: ``after_layer(i)`` once layer i's
    gradients are final in the backward pass, ``after_backward()``, ``global_loss``
    (for the NaN guard), then ``after_update()``. At an epoch's progress points
    ``agree_stop``; at its end ``reduce_totals``."""

    rank = 0
    world_size = 1
    # Whether each global batch is split across ranks, each rank's loss gradient scaled
    # by its share of the batch.
    shares_batches = False
    # Whether decisions that end training (a stop, the NaN guard) must be taken at the
    # same steps on every rank.
    lockstep = False
    # Whether its collectives can run inside a captured CUDA graph.
    capturable = True
    # Whether this replica adds the weight penalties' gradients (one rank does).
    adds_penalty_gradients = True
    after_layer = None  # a hook per layer of the backward pass, or None

    @property
    def is_chief(self):
        """Whether this rank prints, draws and writes files."""
        return self.rank == 0

    def check_same(self, what, **values):
        """Raise ValueError unless every rank passed the same integer ``values``."""

    def all_values(self, values):
        """Every rank's integer ``values``, one row per rank in rank order (a list of
        lists): a rank's part of a step or of a data set that the others must know."""
        return [[int(v) for v in values]]

    def after_backward(self):
        """The backward pass is done: every gradient is final (summed across ranks)."""

    def global_loss(self, loss, scale):
        """The global batch's loss (each rank's ``loss`` weighted by its ``scale``)."""
        return loss

    def contribute_nothing(self):
        """This rank has no rows in this step: its gradients are zeros."""
        raise RuntimeError("a world of one always has rows in its steps")

    def after_update(self):
        """The update is applied: state that drifts across ranks is agreed."""

    def agree_stop(self, stop, at_progress_point):
        """Whether training stops now. Across ranks the flags are agreed at progress
        points only (every rank stops after the same step); alone, at once."""
        return bool(stop)

    def reduce_totals(self, buffer):
        """An epoch's device totals (loss times rows, metric counts), summed across
        ranks."""
        return buffer

    def evaluation_rows(self, count):
        """``(start, stop)`` of the rows this rank evaluates."""
        return 0, count

    def on_chief(self, action, failure):
        """Run ``action()`` on the chief rank only, and return on every rank once it
        succeeded: saving a file. If it failed, the chief raises its error and the other
        ranks an OSError saying ``failure``."""
        return action()


LOCAL = Replica()
