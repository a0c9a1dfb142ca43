"""The fit's objective on :class:`FitVariables`: data and priors, as residuals and as a loss.

- data: the confidence-weighted Huber reprojection residuals (:mod:`mjx_biomech.fitting.losses`)
  of the model's markers for every trial, as a mean over frames;
- priors: L2 on the marker offsets (in centimetres), on the camera moves (in units of 0.01 rad
  and 1 cm), a weak one on the log of every scale group but ``overall`` (which fixes the
  product ``overall × group`` that the data cannot split), and the anthropometric ones
  (:mod:`~mjx_biomech.fitting.anthropometry`): implausible proportions and left/right asymmetry.

:func:`residual_vector` is the least-squares form on every frame (Levenberg–Marquardt);
:func:`minibatch_loss` the same objective's half squared norm on random frames (AdamW).
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from mjx_biomech.body.params import BodyParams
from mjx_biomech.capture.cameras import CameraRig
from mjx_biomech.fitting import anthropometry, losses, trajectories
from mjx_biomech.fitting.variables import FitSetup, FitVariables, TrialArrays
from mjx_biomech.program_cache import cached_jit

# The smoothness term's finite-difference step (s).
_SMOOTH_STEP_S = 1.0 / 120.0


def trial_residuals(setup: FitSetup, traj, params: BodyParams, rig: CameraRig, trial: TrialArrays, frames) -> jax.Array:
    """Reprojection residuals (C, N, J, 2) px of one trial at frame indices ``frames`` (N,)."""
    q = traj(trial.times[frames])
    pts = trajectories.markers_along(setup.model, params, q, setup.marker_set)
    return losses.reprojection_residuals(rig, pts, trial.keypoints[:, frames], trial.confidence[:, frames], setup.delta_px)


def prior_residuals(setup: FitSetup, v: FitVariables) -> list[jax.Array]:
    """The priors' residuals: offsets (M·3,), camera moves (C·6,), log scales with a prior, the
    anthropometric priors (:func:`body_residuals`)."""
    # Camera moves in units of 0.01 rad and 1 cm: the data decide, the prior only fixes what
    # they leave free (a camera that sees too little of the person to be placed).
    out = [math.sqrt(setup.offset_weight) * v.offsets.ravel(), math.sqrt(setup.camera_weight) * v.camera.ravel() / 0.01]
    logs = v.scale_logs(setup)
    if any(setup.scale_prior):
        out.append(math.sqrt(setup.scale_weight) * logs[np.flatnonzero(setup.scale_prior)])
    return out + body_residuals(setup, logs)


def body_residuals(setup: FitSetup, logs: jax.Array) -> list[jax.Array]:
    """The anthropometric priors on log scales ``logs`` (P,), times ``sqrt(setup.body_weight)``:
    per group with a population spread, the standard deviations beyond
    ``anthropometry.PLAUSIBLE_SD``; per tied left/right pair, the log ratio beyond
    ``ASYMMETRY_FREE`` in units of ``ASYMMETRY_SD`` (both 0 inside)."""
    if setup.body_weight <= 0:
        return []
    w = math.sqrt(setup.body_weight)
    sd = np.asarray(setup.scale_sd, float)
    out = []
    groups = np.flatnonzero(sd > 0)
    if len(groups):
        out.append(w * jax.nn.relu(jnp.abs(logs[groups]) / sd[groups] - anthropometry.PLAUSIBLE_SD))
    if setup.mirror:
        a, b = np.asarray(setup.mirror).T
        excess = jax.nn.relu(jnp.abs(logs[a] - logs[b]) - math.log1p(anthropometry.ASYMMETRY_FREE))
        out.append(w * excess / anthropometry.ASYMMETRY_SD)
    return out


def residual_vector(v: FitVariables, args) -> jax.Array:
    """Every residual of the objective on every frame (the least-squares form): each trial's
    reprojection residuals divided by sqrt(frames), then the priors. ``args``:
    ``(setup, rig, trials, ba_on)``."""
    setup, rig, trials, ba_on = args
    params = v.params(setup)
    r = v.rig(rig, ba_on)
    parts = []
    for traj, trial in zip(v.trajectories, trials):
        T = trial.times.shape[0]
        parts.append(trial_residuals(setup, traj, params, r, trial, jnp.arange(T)).ravel() / math.sqrt(T))
    return jnp.concatenate(parts + prior_residuals(setup, v))


@cached_jit
def objective(v: FitVariables, setup: FitSetup, rig: CameraRig, trials, ba_on) -> jax.Array:
    """The objective on every frame: half the squared norm of :func:`residual_vector`."""
    return 0.5 * jnp.sum(residual_vector(v, (setup, rig, trials, ba_on)) ** 2)


def minibatch_loss(v: FitVariables, key: jax.Array, setup: FitSetup, rig: CameraRig, trials, ba_on) -> jax.Array:
    """The objective on ``setup.points`` random frames per trial (drawn with ``key``), plus the
    smoothness term (squared accelerations at those frames) when ``setup.smooth_weight`` > 0."""
    params = v.params(setup)
    r = v.rig(rig, ba_on)
    total = 0.0
    for traj, trial, k in zip(v.trajectories, trials, jax.random.split(key, len(trials))):
        T = trial.times.shape[0]
        n = min(setup.points, T)
        frames = jax.random.choice(k, T, (n,), replace=False)
        total = total + losses.sum_of_squares(trial_residuals(setup, traj, params, r, trial, frames)) / n
        if setup.smooth_weight > 0:
            acc = losses.smoothness_residuals(traj, trial.times[frames], _SMOOTH_STEP_S)
            total = total + 0.5 * setup.smooth_weight * jnp.sum(acc * acc) / n
    return total + losses.sum_of_squares(prior_residuals(setup, v))
