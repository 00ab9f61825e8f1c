"""The NaN guard: training stops at the first non-finite loss, before that step's update
reaches the weights, and weights that went non-finite earlier are rolled back.

Where reading the device is free (NumPy, stepping eagerly) the loss is checked on the
host every step. Elsewhere (a GPU, or any captured step, which must not read the device)
a device flag records the first bad step (``Backend.guard_finite``), every
update after it is skipped on the device, and the flag is read where the loop reads
the device anyway: at progress points and at the end of the epoch.
"""
from __future__ import annotations


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss; the model keeps its last finite weights."""


class NanGuard:
    """The guard of one compiled model: a device copy of the weights and optimizer state
    taken at the start of each epoch, and the device flags."""

    def __init__(self, model):
        self.model = model
        self.backend = model.backend
        self.on_host = model.backend.cheap_host_reads
        self.restore_weights = True  # see TerminateOnNaN
        self._snapshot = None  # {"params", state names..., "iterations"}: device copies
        self._snapshot_steps = 0  # model.train_steps when the snapshot was taken
        self._flags = None  # (int32 flag, int64 bad step), (1,) each, on the device
        self._first_step = 0  # the optimizer's step count at the start of the epoch

    def configure(self, on_host, restore_weights):
        """For one fit: check on the host (else with device flags), and whether weights
        that went non-finite are rolled back to the start of the epoch."""
        self.on_host, self.restore_weights = on_host, restore_weights

    def begin_epoch(self):
        """Snapshot the weights; on a device, zero the flag (one read of the step count).
        Returns the device flags to pass to ``guard`` (None on the host)."""
        model, be = self.model, self.backend
        optimizer = model.optimizer
        if self._snapshot is None:
            self._snapshot = {name: be.empty(buf.shape, buf.dtype)
                              for name, buf in self._live_buffers().items()}
        for name, buf in self._live_buffers().items():
            be.copy(buf, out=self._snapshot[name])
        self._snapshot_steps = model.train_steps
        if self.on_host:
            return None
        if self._flags is None:
            self._flags = (be.zeros((1,), "int32"), be.zeros((1,), "int64"))
        be.fill(self._flags[0], 0)
        self._first_step = optimizer.read_iterations()
        return self._flags

    def _live_buffers(self):
        """What a bad step may have spoiled: the weights, the moving statistics, the
        optimizer's state and step count."""
        model, optimizer = self.model, self.model.optimizer
        return {"params": model.flat_params, "layer_state": model.weights.state,
                "iterations": optimizer.iterations,
                **{f"optimizer_{k}": v for k, v in optimizer.state.items()}}

    def check_loss(self, loss, epoch, step, steps):
        """Host mode: raise before the update when this step's loss is not finite."""
        be = self.backend
        if not be.to_float(be.all_finite(loss)):
            self.stop(be.to_float(loss), epoch, step, steps)

    def guard(self, loss, flags):
        """Device mode: record a non-finite loss; returns the flag the update skips on."""
        self.backend.guard_finite(loss, self.model.optimizer.iterations, *flags)
        return flags[0]

    def check_flags(self, epoch, steps):
        """Device mode: raise if a step of this epoch had a non-finite loss."""
        be = self.backend
        flag, bad_step = self._flags
        if int(be.to_numpy(flag)[0]):
            step = int(be.to_numpy(bad_step)[0]) - self._first_step
            self.model.train_steps = self._snapshot_steps + step
            self.stop(float("nan"), epoch, step, steps)

    def stop(self, loss, epoch, step, steps):
        """Raise NonFiniteLossError. The bad step's update was never applied; if an
        earlier step already left non-finite weights (a finite loss with an infinite
        gradient), roll back to the copy taken at the start of this epoch."""
        model, be = self.model, self.backend
        kept = "the model keeps its last finite weights"
        if not be.to_float(be.all_finite(model.flat_params)):
            if self.restore_weights:
                for name, buf in self._live_buffers().items():
                    be.copy(self._snapshot[name], out=buf)
                model.weights.refresh_compute()
                model.train_steps = self._snapshot_steps
                kept += (f"; the weights had become non-finite, so they were restored to "
                         f"the start of epoch {epoch + 1}")
            else:
                kept = ("the weights are non-finite and were left so "
                        "(TerminateOnNaN(restore_weights=False))")
        of = "" if steps is None else f"/{steps}"  # a batch source of unknown length
        raise NonFiniteLossError(
            f"fit: non-finite loss {loss} at epoch {epoch + 1}, step {step + 1}{of}; "
            f"training stopped and {kept} (lower the learning rate, or clip gradients with "
            f"clipnorm=)")
