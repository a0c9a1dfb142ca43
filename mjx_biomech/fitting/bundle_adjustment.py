"""Joint bundle adjustment: every frame's pose, the body and the cameras refined together.

A Levenberg–Marquardt (:mod:`mjx_biomech.fitting.solvers.schur_lm`) over the fit's objective on
every frame of every trial. A frame's pose is ``u``: the trajectory's unconstrained values of
the active coordinates (logits of bounded ones, the root's own values), so joint ranges hold;
the shared vector ``p`` stacks the log scales, the marker offsets (cm) and, when the cameras are
free, the camera moves. The same problem at the fit's optimum gives its standard errors
(:mod:`mjx_biomech.fitting.uncertainty`).
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


def shared_vector(v: FitVariables, free_cameras: bool = True) -> jax.Array:
    """``p``: the log scales (P,), the offsets (M·3,) in cm and, if ``free_cameras``, the camera
    moves (C·6,)."""
    return jnp.concatenate([v.log_scales, v.offsets.ravel()] + ([v.camera.ravel()] if free_cameras else []))


def unpack_shared(p, setup: FitSetup, cameras: int, free_cameras: bool = True) -> FitVariables:
    """The :class:`FitVariables` (no trajectories) of ``p`` (:func:`shared_vector`); held cameras do not move."""
    P, M = len(setup.model.scale_param_names), len(setup.site_ids)
    camera = p[P + 3 * M:].reshape(cameras, 6) if free_cameras else jnp.zeros((cameras, 6), p.dtype)
    return FitVariables((), p[:P], p[P:P + 3 * M].reshape(M, 3), camera)


def frame_points(u, p, t, args):
    """A frame's model markers (J, 3) m and the rig that sees them, at pose ``u`` (A,) and time
    ``t``; ``args``: ``(setup, rig, cmap, free_cameras)``."""
    setup, rig, cmap, free_cameras = args
    v = unpack_shared(p, setup, len(rig), free_cameras)
    coords = cmap.to_coords(u[None], t[None])[0]
    return setup.model.markers(coords, v.params(setup), setup.marker_set), v.rig(rig, 1.0)


def _residual(u, p, frame, args):
    t, keypoints, confidence, weight = frame
    points, rig = frame_points(u, p, t, args)
    r = losses.reprojection_residuals(rig, points, keypoints, confidence, args[0].delta_px)
    return jnp.sqrt(weight) * r.ravel()


def prior(p, args):
    """The priors' residuals (:func:`~mjx_biomech.fitting.objective.prior_residuals`) on ``p``."""
    setup, rig, _, free_cameras = args
    return jnp.concatenate(prior_residuals(setup, unpack_shared(p, setup, len(rig), free_cameras)))


def frames_of(v: FitVariables, trials):
    """Every frame of every trial in the layout of the Schur solver: the poses ``u`` (F, A) (the
    trajectory's unconstrained values, the root line added), the frames' data ``(times,
    keypoints (F, C, J, 2), confidence (F, C, J), weight 1/T)`` and one coordinate map for all
    trials (their root lines zeroed)."""
    dtype = v.log_scales.dtype
    cmap0 = None
    us, frames = [], []
    for traj, trial in zip(v.trajectories, trials):
        times = np.asarray(trial.times, float)
        T = len(times)
        us.append(np.asarray(traj.raw(trial.times), float) + traj.cmap.root_line(times))
        cmap0 = cmap0 or replace(traj.cmap, intercept=(0.0,) * len(traj.cmap.intercept), slope=(0.0,) * len(traj.cmap.slope))
        frames.append((trial.times, jnp.moveaxis(trial.keypoints, 1, 0), jnp.moveaxis(trial.confidence, 1, 0),
                       jnp.full((T,), 1.0 / T, dtype)))
    return jnp.asarray(np.concatenate(us), dtype), jax.tree_util.tree_map(lambda *x: jnp.concatenate(x), *frames), cmap0


def joint_bundle_adjustment(
    v: FitVariables, setup: FitSetup, rig: CameraRig, trials, iterations: int, progress: Progress | None = None,
    free_cameras: bool = True,
) -> FitVariables:
    """Bundle adjustment proper: per-frame poses, body parameters and camera moves (held where
    not ``free_cameras``) refined together on every frame of every trial (at most ``iterations``
    Gauss–Newton systems); then each spline trajectory is refitted to its trial's refined poses
    (an MLP keeps its weights and follows in the steps after). ``progress``: see
    :mod:`mjx_biomech.fitting.fit` (stage ``"bundle adjustment"``)."""
    dtype = v.log_scales.dtype
    # The poses are absolute (the root line added): the line of each trial's map is zeroed, so
    # one map serves every trial.
    u, data, cmap0 = frames_of(v, trials)
    u, p, _ = schur_levenberg_marquardt(_residual, prior, u, shared_vector(v, free_cameras), data,
                                        (setup, rig, cmap0, free_cameras), iterations=iterations, progress=progress,
                                        stage=STAGE)
    shared = unpack_shared(p, setup, len(rig), free_cameras)
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
    return FitVariables(tuple(trajs), shared.log_scales, shared.offsets, shared.camera if free_cameras else v.camera)
