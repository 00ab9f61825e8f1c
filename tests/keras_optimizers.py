"""Keras 3's optimizers transcribed into NumPy, variable by variable, from Keras 3.16's
``keras/src/optimizers/base_optimizer.py`` (``apply``, ``_clip_gradients``,
``_apply_weight_decay``, the moving average), ``keras/src/backend/jax/optimizer.py``
(gradient accumulation) and each optimizer's ``update_step``. It shares no code with
dnn, so the tests can hold dnn's fused updates to what Keras computes without Keras.

``variables`` are float64 arrays updated in place; ``learning_rate`` a number (set it
between steps, as ReduceLROnPlateau does) or a callable of the step count (a schedule).
"""
import re

import numpy


class Optimizer:
    def __init__(self, variables, names, learning_rate, weight_decay=None, clipnorm=None,
                 global_clipnorm=None, clipvalue=None, use_ema=False, ema_momentum=0.99,
                 ema_overwrite_frequency=None, gradient_accumulation_steps=None,
                 exclude_from_weight_decay=None):
        self.variables, self.names = variables, names
        self.learning_rate = learning_rate
        self.weight_decay, self.clipnorm, self.global_clipnorm = (weight_decay, clipnorm,
                                                                  global_clipnorm)
        self.clipvalue, self.use_ema, self.ema_momentum = clipvalue, use_ema, ema_momentum
        self.ema_overwrite_frequency = ema_overwrite_frequency
        self.gradient_accumulation_steps = gradient_accumulation_steps
        self.exclude = exclude_from_weight_decay
        self._iterations = 0
        if use_ema:
            self.averages = [numpy.zeros_like(v) for v in variables]
        if gradient_accumulation_steps:
            self.accumulated = [numpy.zeros_like(v) for v in variables]
        self.build()

    def build(self):
        pass

    @property
    def iterations(self):
        if self.gradient_accumulation_steps:
            return self._iterations // self.gradient_accumulation_steps
        return self._iterations

    def current_learning_rate(self):
        lr = self.learning_rate
        return lr(self._iterations) if callable(lr) else lr

    def apply(self, grads):
        grads = [numpy.array(g, dtype=numpy.float64) for g in grads]
        if self.gradient_accumulation_steps:
            steps = self.gradient_accumulation_steps
            if (self._iterations + 1) % steps == 0:
                grads = [(g + a) / steps for g, a in zip(grads, self.accumulated)]
                self.accumulated = [numpy.zeros_like(a) for a in self.accumulated]
                self._clip_decay_update(grads)
            else:
                self.accumulated = [g + a for g, a in zip(grads, self.accumulated)]
        else:
            self._clip_decay_update(grads)
        if self.use_ema:
            momentum = self.ema_momentum * float(self.iterations != 0)
            for var, average in zip(self.variables, self.averages):
                average[...] = momentum * average + (1 - momentum) * var
            if self.ema_overwrite_frequency is not None and \
                    (self.iterations + 1) % self.ema_overwrite_frequency == 0:
                for var, average in zip(self.variables, self.averages):
                    var[...] = average
        self._iterations += 1

    def finalize_variable_values(self):
        if self.use_ema:
            for var, average in zip(self.variables, self.averages):
                var[...] = average

    def _clip_decay_update(self, grads):
        grads = self._clip_gradients(grads)
        lr = self.current_learning_rate()
        if self.weight_decay is not None:
            for var, name in zip(self.variables, self.names):
                if self._use_weight_decay(name):
                    var[...] = var - var * self.weight_decay * lr
        self.prepare_step()
        for i, (g, var) in enumerate(zip(grads, self.variables)):
            self.update_step(g, i, var, lr)

    def prepare_step(self):
        pass

    def _use_weight_decay(self, name):
        return not self.exclude or re.search("|".join(set(self.exclude)), name) is None

    def _clip_gradients(self, grads):
        if self.clipnorm:
            out = []
            for g in grads:
                l2sum = numpy.sum(g * g)
                l2norm = numpy.sqrt(l2sum) if l2sum > 0 else l2sum
                out.append(g * self.clipnorm / numpy.maximum(l2norm, self.clipnorm))
            return out
        if self.global_clipnorm:
            norm = numpy.sqrt(sum(numpy.sum(g * g) for g in grads))
            scale = self.global_clipnorm * min(1.0 / norm, 1.0 / self.global_clipnorm)
            return [g * (scale + (norm - norm)) for g in grads]
        if self.clipvalue:
            return [numpy.clip(g, -self.clipvalue, self.clipvalue) for g in grads]
        return grads


class SGD(Optimizer):
    def __init__(self, *args, momentum=0.0, nesterov=False, **kwargs):
        self.momentum, self.nesterov = momentum, nesterov
        super().__init__(*args, **kwargs)

    def build(self):
        self.momentums = [numpy.zeros_like(v) for v in self.variables]

    def update_step(self, gradient, i, variable, lr):
        if self.momentum != 0:
            m = self.momentums[i]
            m[...] = m * self.momentum - gradient * lr
            if self.nesterov:
                variable += m * self.momentum - gradient * lr
            else:
                variable += m
        else:
            variable -= gradient * lr


class RMSprop(Optimizer):
    def __init__(self, *args, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False,
                 **kwargs):
        self.rho, self.momentum, self.epsilon, self.centered = rho, momentum, epsilon, centered
        super().__init__(*args, **kwargs)

    def build(self):
        zeros = lambda: [numpy.zeros_like(v) for v in self.variables]  # noqa: E731
        self.velocities, self.momentums, self.average_grads = zeros(), zeros(), zeros()

    def update_step(self, gradient, i, variable, lr):
        rho, velocity = self.rho, self.velocities[i]
        velocity[...] = rho * velocity + (1 - rho) * numpy.square(gradient)
        if self.centered:
            average = self.average_grads[i]
            average[...] = rho * average + (1 - rho) * gradient
            denominator = velocity - numpy.square(average) + self.epsilon
        else:
            denominator = velocity + self.epsilon
        increment = lr * gradient / numpy.sqrt(denominator)
        if self.momentum > 0:
            m = self.momentums[i]
            m[...] = self.momentum * m + increment
            variable -= m
        else:
            variable -= increment


class Adam(Optimizer):
    def __init__(self, *args, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False,
                 **kwargs):
        self.beta_1, self.beta_2, self.epsilon, self.amsgrad = beta_1, beta_2, epsilon, amsgrad
        super().__init__(*args, **kwargs)

    def build(self):
        zeros = lambda: [numpy.zeros_like(v) for v in self.variables]  # noqa: E731
        self.m, self.v, self.v_hat = zeros(), zeros(), zeros()

    def update_step(self, gradient, i, variable, lr):
        local_step = self.iterations + 1
        alpha = lr * numpy.sqrt(1 - self.beta_2 ** local_step) / (1 - self.beta_1 ** local_step)
        m, v = self.m[i], self.v[i]
        m += (gradient - m) * (1 - self.beta_1)
        v += (numpy.square(gradient) - v) * (1 - self.beta_2)
        if self.amsgrad:
            v_hat = self.v_hat[i]
            v_hat[...] = numpy.maximum(v_hat, v)
            v = v_hat
        variable -= (m * alpha) / (numpy.sqrt(v) + self.epsilon)


class Nadam(Optimizer):
    def __init__(self, *args, beta_1=0.9, beta_2=0.999, epsilon=1e-7, **kwargs):
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        super().__init__(*args, **kwargs)

    def build(self):
        self.m = [numpy.zeros_like(v) for v in self.variables]
        self.v = [numpy.zeros_like(v) for v in self.variables]
        self.u_product = 1.0

    def prepare_step(self):  # Nadam's _backend_update_step
        self.u_product = self.u_product * self.beta_1 * (
            1.0 - 0.5 * numpy.power(0.96, self.iterations + 1))

    def update_step(self, gradient, i, variable, lr):
        local_step, next_step = self.iterations + 1, self.iterations + 2
        beta_1, beta_2 = self.beta_1, self.beta_2
        u_t = beta_1 * (1.0 - 0.5 * numpy.power(0.96, local_step))
        u_t_1 = beta_1 * (1.0 - 0.5 * numpy.power(0.96, next_step))
        u_product_t_1 = self.u_product * u_t_1
        beta_2_power = numpy.power(beta_2, local_step)
        m, v = self.m[i], self.v[i]
        m += (gradient - m) * (1 - beta_1)
        v += (numpy.square(gradient) - v) * (1 - beta_2)
        m_hat = (u_t_1 * m) / (1 - u_product_t_1) + ((1 - u_t) * gradient) / (1 - self.u_product)
        v_hat = v / (1 - beta_2_power)
        variable -= (m_hat * lr) / (numpy.sqrt(v_hat) + self.epsilon)


class Adagrad(Optimizer):
    def __init__(self, *args, initial_accumulator_value=0.1, epsilon=1e-7, **kwargs):
        self.initial, self.epsilon = initial_accumulator_value, epsilon
        super().__init__(*args, **kwargs)

    def build(self):
        self.accumulators = [numpy.full_like(v, self.initial) for v in self.variables]

    def update_step(self, gradient, i, variable, lr):
        accumulator = self.accumulators[i]
        accumulator += numpy.square(gradient)
        variable -= (lr * gradient) / numpy.sqrt(accumulator + self.epsilon)


class Adamax(Optimizer):
    def __init__(self, *args, beta_1=0.9, beta_2=0.999, epsilon=1e-7, **kwargs):
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        super().__init__(*args, **kwargs)

    def build(self):
        self.m = [numpy.zeros_like(v) for v in self.variables]
        self.u = [numpy.zeros_like(v) for v in self.variables]

    def update_step(self, gradient, i, variable, lr):
        beta_1_power = numpy.power(self.beta_1, self.iterations + 1)
        m, u = self.m[i], self.u[i]
        m += (gradient - m) * (1 - self.beta_1)
        u[...] = numpy.maximum(self.beta_2 * u, numpy.abs(gradient))
        variable -= (lr * m) / ((1 - beta_1_power) * (u + self.epsilon))


class Lion(Optimizer):
    def __init__(self, *args, beta_1=0.9, beta_2=0.99, **kwargs):
        self.beta_1, self.beta_2 = beta_1, beta_2
        super().__init__(*args, **kwargs)

    def build(self):
        self.momentums = [numpy.zeros_like(v) for v in self.variables]

    def update_step(self, gradient, i, variable, lr):
        m = self.momentums[i]
        variable -= lr * numpy.sign(m * self.beta_1 + gradient * (1.0 - self.beta_1))
        m[...] = m * self.beta_2 + gradient * (1.0 - self.beta_2)


OPTIMIZERS = {"sgd": SGD, "rmsprop": RMSprop, "adam": Adam, "adamw": Adam, "nadam": Nadam,
              "adagrad": Adagrad, "adamax": Adamax, "lion": Lion}


# Keras 3's learning_rate_schedule.py, for the step counts the optimizer passes.
def polynomial_decay(lr0, decay_steps, end=0.0001, power=1.0, cycle=False):
    def rate(step):
        steps = decay_steps
        if cycle:
            steps = decay_steps * (1.0 if step == 0 else numpy.ceil(step / decay_steps))
        else:
            step = min(step, decay_steps)
        return (lr0 - end) * numpy.power(1 - step / steps, power) + end
    return rate


def inverse_time_decay(lr0, decay_steps, decay_rate, staircase=False):
    def rate(step):
        p = step / decay_steps
        return lr0 / (1 + decay_rate * (numpy.floor(p) if staircase else p))
    return rate


def cosine_decay_restarts(lr0, first_decay_steps, t_mul=2.0, m_mul=1.0, alpha=0.0):
    def rate(step):
        fraction = step / first_decay_steps
        if t_mul == 1.0:
            restart = numpy.floor(fraction)
            fraction -= restart
        else:
            restart = numpy.floor(numpy.log(1.0 - fraction * (1.0 - t_mul)) / numpy.log(t_mul))
            done = (1.0 - numpy.power(t_mul, restart)) / (1.0 - t_mul)
            fraction = (fraction - done) / numpy.power(t_mul, restart)
        cosine = 0.5 * numpy.power(m_mul, restart) * (1.0 + numpy.cos(numpy.pi * fraction))
        return lr0 * ((1 - alpha) * cosine + alpha)
    return rate


def exponential_decay(lr0, decay_steps, decay_rate):
    return lambda step: lr0 * numpy.power(decay_rate, step / decay_steps)
