"""AdamW: the paper's optimiser and learning-rate schedule, one compiled step, and the fit's loop.

The optimiser is optax's ``adamw`` (β1 = 0.8, weight decay 1e-5); in a fit the camera moves
get their own Adam (no weight decay: their prior already holds them) at their own learning
rate, through ``optax.partition``. Learning rates follow optax schedules: exponential decay,
1000-fold over the steps, restarted (``optax.join_schedules``) when bundle adjustment starts.
The schedules are evaluated once on the host and each step gets its rates as numbers (the
hyperparameters of ``optax.inject_hyperparams``), so one compiled step serves every step,
learning rate and step count.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mjx_biomech.fitting import checkpoints
from mjx_biomech.fitting.bundle_adjustment import joint_bundle_adjustment
from mjx_biomech.fitting.objective import minibatch_loss
from mjx_biomech.fitting.relabel import Relabel, relabel_left_right
from mjx_biomech.fitting.solvers import Progress
from mjx_biomech.fitting.variables import FitSetup, FitVariables, optimiser_groups

# The paper's AdamW: β1 = 0.8, weight decay 1e-5, learning rate decaying 1000-fold (1e-4 → 1e-7).
ADAM_B1 = 0.8
WEIGHT_DECAY = 1e-5
LR_DECAY = 1e-3

STAGE = "adam"


def _adamw(learning_rate) -> optax.GradientTransformation:
    return optax.adamw(learning_rate, b1=ADAM_B1, weight_decay=WEIGHT_DECAY)


def optimiser(groups: Callable | None = None) -> optax.GradientTransformation:
    """The paper's AdamW, its learning rate the hyperparameter ``"learning_rate"`` (set by
    :func:`step`).

    With ``groups`` (a pytree of parameters → the same tree of ``"body"``/``"camera"``), the
    ``"camera"`` leaves get Adam with the same β1 but no weight decay, at the hyperparameter
    ``"camera_learning_rate"``.
    """
    if groups is None:
        return optax.inject_hyperparams(_adamw)(learning_rate=0.0)

    def partitioned(learning_rate, camera_learning_rate):
        return optax.partition({"body": _adamw(learning_rate), "camera": optax.adam(camera_learning_rate, b1=ADAM_B1)}, groups)

    return optax.inject_hyperparams(partitioned)(learning_rate=0.0, camera_learning_rate=0.0)


def decay(lr: float, steps: int, restart: int | None = None) -> optax.Schedule:
    """The paper's schedule: ``lr`` decaying exponentially 1000-fold over ``steps``.

    With ``restart`` (0 ≤ restart < steps, the step at which bundle adjustment starts) it
    decays 100-fold up to ``restart`` and again from a tenth of ``lr`` 100-fold over the rest,
    so the trajectories can still follow the cameras as they move.
    """
    if restart is None or restart >= steps:
        return optax.exponential_decay(lr, steps, LR_DECAY)
    return optax.join_schedules(
        [optax.exponential_decay(lr, restart, 10 * LR_DECAY), optax.exponential_decay(0.1 * lr, steps - restart, 10 * LR_DECAY)],
        [restart],
    )


def camera_decay(lr: float, steps: int, start: int) -> optax.Schedule:
    """The camera moves' schedule: 0 before ``start`` (the cameras held), then ``lr`` decaying
    1000-fold over the remaining steps."""
    return optax.join_schedules(
        [optax.constant_schedule(0.0), optax.exponential_decay(lr, max(steps - start, 1), LR_DECAY)], [start]
    )


def learning_rates(schedule: optax.Schedule, steps: int) -> np.ndarray:
    """(steps,) the values of ``schedule`` at steps 0 … steps − 1."""
    return np.broadcast_to(np.asarray(schedule(jnp.arange(steps))), (steps,))


@eqx.filter_jit
def step(loss: Callable, opt: optax.GradientTransformation, v, opt_state, rates: dict, key: jax.Array, *args):
    """One AdamW step on ``loss(v, key, *args)`` (a module-level function, so the compiled
    step is reused) with ``opt`` from :func:`optimiser` at learning ``rates`` (hyperparameter
    name → 0-d array).

    Returns:
        ``(v, opt_state, loss, key)``: the variables after the step, the optimiser state, the
        loss before it (0-d array) and the next random key.
    """
    key, sub = jax.random.split(key)
    value, grads = eqx.filter_value_and_grad(loss)(v, sub, *args)
    opt_state = opt_state._replace(hyperparams={**opt_state.hyperparams, **rates})
    updates, opt_state = opt.update(grads, opt_state, eqx.filter(v, eqx.is_inexact_array))
    return eqx.apply_updates(v, updates), opt_state, value, key


_FIT_OPTIMISER = optimiser(optimiser_groups)


def run(
    v: FitVariables, setup: FitSetup, rig, trials, swapped, relabel: Relabel, *, steps: int, lr: float, ba_lr: float,
    ba_start: int, ba_iterations: int, key: jax.Array, checkpoint_dir=None, checkpoint_every: int = 500, meta: str = "",
    progress: Progress | None = None,
):
    """The fit's AdamW loop: ``steps`` steps on random frames (:func:`minibatch_loss`), the
    learning rate :func:`decay` (restarted at ``ba_start``), the cameras free from ``ba_start``
    at learning rate ``ba_lr`` (:func:`camera_decay`), a joint bundle adjustment of
    ``ba_iterations`` iterations at ``ba_start`` and left/right relabelling at
    ``relabel.at_steps``. With ``checkpoint_dir``, the state is saved there every
    ``checkpoint_every`` steps and at the end, and a fit whose fingerprint is ``meta`` resumes
    from it. ``progress``: stage ``"adam"``, see :mod:`mjx_biomech.fitting.fit`.

    Returns:
        ``(v, trials, swapped, history)``: the variables, the (relabelled) trials, which pairs
        were exchanged, and the loss per step (steps,).
    """
    dtype = v.log_scales.dtype
    body_rates = learning_rates(decay(lr, steps, restart=ba_start), steps)
    camera_rates = learning_rates(camera_decay(ba_lr, steps, ba_start), steps)
    vp = eqx.filter(v, eqx.is_inexact_array)
    opt_state = _FIT_OPTIMISER.init(vp)
    history = jnp.full((steps,), jnp.nan)
    start = 0
    folder = None if checkpoint_dir is None else Path(checkpoint_dir)
    if folder is not None:
        loaded = checkpoints.load(folder, (vp, opt_state, history, key, jnp.asarray(0), trials, swapped), meta)
        if loaded is not None:
            vp, opt_state, history, key, start, trials, swapped = loaded
            v = eqx.combine(vp, v)
            start = int(start)
    if progress is not None:
        progress(STAGE, start, steps, {})
    pending = []
    for i in range(start, steps):
        ba_on = jnp.asarray(1.0 if i >= ba_start else 0.0, dtype)
        if i in relabel.at_steps:
            trials, swapped = relabel_left_right(v, setup, rig, trials, ba_on, relabel.pairs, swapped, relabel.threshold_px)
        if i == ba_start:
            v = joint_bundle_adjustment(v, setup, rig, trials, ba_iterations, progress)
        rates = {"learning_rate": jnp.asarray(body_rates[i], dtype), "camera_learning_rate": jnp.asarray(camera_rates[i], dtype)}
        v, opt_state, loss, key = step(minibatch_loss, _FIT_OPTIMISER, v, opt_state, rates, key, setup, rig, trials, ba_on)
        pending.append((i, loss))
        if folder is not None and ((i + 1) % checkpoint_every == 0 or i + 1 == steps):
            history = _record(history, pending)
            pending = []
            state = (eqx.filter(v, eqx.is_inexact_array), opt_state, history, key, jnp.asarray(i + 1), trials, swapped)
            checkpoints.save(folder, state, meta)
        if progress is not None:
            progress(STAGE, i + 1, steps, {"loss": loss})
    return v, trials, swapped, np.asarray(_record(history, pending))


def _record(history: jax.Array, pending: list) -> jax.Array:
    """``history`` (steps,) with the losses of ``pending`` (step, 0-d array) written in, all at
    once: the loop itself never waits for a step's loss."""
    if not pending:
        return history
    idx = np.array([s for s, _ in pending])
    return history.at[idx].set(jnp.stack([jnp.asarray(loss, history.dtype) for _, loss in pending]))
