"""Joint bundle adjustment: every frame's pose, the body and the cameras refined together.

A Levenberg–Marquardt (:mod:`mjx_biomech.fitting.solvers.schur_lm`) over the fit's objective on
every frame of every trial. A frame's pose is ``u``: the trajectory's unconstrained values of
the active coordinates (logits of bounded ones, the root's own values), so joint ranges hold;
the shared vector ``p`` stacks the log scales, the marker offsets (cm) and the camera moves.
"""

from __future__ import annotations

from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np

from mjx_biomech.capture.cameras import CameraRig
from mjx_biomech.fitting import losses, trajectories
from mjx_biomech.fitting.objective import prior_residuals
from mjx_biomech.fitting.solvers import Progress
from mjx_biomech.fitting.solvers.schur_lm import schur_levenberg_marquardt
from mjx_biomech.fitting.variables import FitSetup, FitVariables

STAGE = "bundle adjustment"


def _shared_vector(v: FitVariables) -> jax.Array:
    return jnp.concatenate([v.log_scales, v.offsets.ravel(), v.camera.ravel()])


def _unpack_shared(p, setup: FitSetup, cameras: int) -> FitVariables:
    P, M = len(setup.model.scale_param_names), len(setup.site_ids)
    return FitVariables((), p[:P], p[P:P + 3 * M].reshape(M, 3), p[P + 3 * M:].reshape(cameras, 6))


def _residual(u, p, frame, args):
    setup, rig, cmap = args
    t, keypoints, confidence, weight = frame
    v = _unpack_shared(p, setup, len(rig))
    coords = cmap.to_coords(u[None], t[None])[0]
    points = setup.model.markers(coords, v.params(setup), setup.marker_set)
    r = losses.reprojection_residuals(v.rig(rig, 1.0), points, keypoints, confidence, setup.delta_px)
    return jnp.sqrt(weight) * r.ravel()


def _prior(p, args):
    setup, rig, _ = args
    return jnp.concatenate(prior_residuals(setup, _unpack_shared(p, setup, len(rig))))


def joint_bundle_adjustment(
    v: FitVariables, setup: FitSetup, rig: CameraRig, trials, iterations: int, progress: Progress | None = None
) -> FitVariables:
    """Bundle adjustment proper: per-frame poses, body parameters and camera moves refined
    together on every frame of every trial (at most ``iterations`` Gauss–Newton systems); then
    each spline trajectory is refitted to its trial's refined poses (an MLP keeps its weights and
    follows in the steps after). ``progress``: see :mod:`mjx_biomech.fitting.fit` (stage
    ``"bundle adjustment"``)."""
    dtype = v.log_scales.dtype
    # The poses are absolute (the root line added): the line of each trial's map is zeroed, so
    # one map serves every trial.
    cmap0 = None
    us, frames = [], []
    for traj, trial in zip(v.trajectories, trials):
        times = np.asarray(trial.times, float)
        T = len(times)
        us.append(np.asarray(traj.raw(trial.times), float) + traj.cmap.root_line(times))
        cmap0 = cmap0 or replace(traj.cmap, intercept=(0.0,) * len(traj.cmap.intercept), slope=(0.0,) * len(traj.cmap.slope))
        frames.append((trial.times, jnp.moveaxis(trial.keypoints, 1, 0), jnp.moveaxis(trial.confidence, 1, 0),
                       jnp.full((T,), 1.0 / T, dtype)))
    u = jnp.asarray(np.concatenate(us), dtype)
    data = jax.tree_util.tree_map(lambda *x: jnp.concatenate(x), *frames)
    u, p, _ = schur_levenberg_marquardt(_residual, _prior, u, _shared_vector(v), data, (setup, rig, cmap0),
                                        iterations=iterations, progress=progress, stage=STAGE)
    shared = _unpack_shared(p, setup, len(rig))
    trajs, start = [], 0
    for traj, trial in zip(v.trajectories, trials):
        times = np.asarray(trial.times, float)
        z = np.asarray(u[start:start + len(times)], float) - traj.cmap.root_line(times)
        start += len(times)
        if isinstance(traj, trajectories.SplineTrajectory):
            # Through the coordinates, so that poses at a joint's limit (logits anywhere towards
            # infinity) become logits a little inside it.
            coords = np.asarray(traj.cmap.to_coords(jnp.asarray(z, dtype), trial.times), float)
            traj = trajectories.spline_from_z(traj, times, traj.cmap.to_z(coords, times))
        trajs.append(traj)
    return FitVariables(tuple(trajs), shared.log_scales, shared.offsets, shared.camera)
