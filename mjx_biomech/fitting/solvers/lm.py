"""The fit's Levenberg–Marquardt loop: optimistix on every frame (spline trajectories).

optimistix builds the dense Jacobian (every residual × every variable), so this suits short
captures and few variables; :mod:`mjx_biomech.fitting.bundle_adjustment` is the structured
alternative for long ones.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import optimistix as optx

from mjx_biomech.fitting.objective import objective, residual_vector
from mjx_biomech.fitting.solvers import Progress
from mjx_biomech.fitting.variables import FitSetup, FitVariables

STAGE = "lm"


@eqx.filter_jit
def _solve(v: FitVariables, setup: FitSetup, rig, trials, ba_on, steps: int) -> FitVariables:
    solver = optx.LevenbergMarquardt(rtol=1e-8, atol=1e-8)
    sol = optx.least_squares(residual_vector, solver, v, args=(setup, rig, trials, ba_on), max_steps=steps, throw=False)
    return sol.value


def run(v: FitVariables, setup: FitSetup, rig, trials, steps: int, ba_start: int, progress: Progress | None = None):
    """Levenberg–Marquardt in at most two calls: ``ba_start`` iterations with the cameras held,
    then the rest with them free. Each call runs to convergence or its iteration count in one
    piece: the damping adapts over the iterations, and restarting it every few iterations (to
    show progress) left the solver stuck with too little damping. ``progress``: stage
    ``"lm"``, one report per call (see :mod:`mjx_biomech.fitting.fit`).

    Returns:
        ``(v, history)``: the variables and the objective after each call.
    """
    if progress is not None:
        progress(STAGE, 0, steps, {})
    history = []
    dtype = v.log_scales.dtype
    for done, count, ba in ((0, min(ba_start, steps), 0.0), (ba_start, steps - ba_start, 1.0)):
        if count <= 0:
            continue
        ba_on = jnp.asarray(ba, dtype)
        v = _solve(v, setup, rig, trials, ba_on, count)
        loss = float(objective(v, setup, rig, trials, ba_on))
        history.append(loss)
        if progress is not None:
            progress(STAGE, done + count, steps, {"loss": loss})
    return v, np.asarray(history)
