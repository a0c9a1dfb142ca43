"""What a fit optimises and what its compiled functions close over.

:class:`FitVariables` holds the unknowns (trajectories, log scales, marker offsets, camera
moves); :class:`FitSetup` the fixed choices (model, marker set, weights), hashable so compiled
steps are reused; :class:`TrialArrays` one trial's data as arrays. :func:`initial_variables`
starts a fit from a robust triangulation of the root, so no good guess is needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from mjx_biomech.body.params import BodyParams
from mjx_biomech.body.rotations import rodrigues
from mjx_biomech.capture.cameras import CameraRig
from mjx_biomech.capture.captures import Capture
from mjx_biomech.fitting import anthropometry, initialisation, trajectories

# Marker offsets are optimised in centimetres: then a unit prior weight is a sensible default
# and the offsets' gradients are of the size of the scales' and angles'.
OFFSET_UNIT_M = 0.01


@dataclass(frozen=True)
class FitSetup:
    """What the compiled functions close over (hashable; the model hashes by identity).

    ``site_ids``: the marker set's sites; ``scale_prior``: per scale group, whether its log
    scale has the weak prior that splits ``overall`` from the groups (and is held inside
    :data:`anthropometry.BOUNDS`); ``scale_sd``: per group, the population's standard deviation of
    its log scale (0: none; :mod:`~mjx_biomech.fitting.anthropometry`); ``mirror``: left/right
    group pairs tied softly (empty: free); ``delta_px``: Huber threshold (px); the weights of the
    offset, scale, anthropometric, smoothness and camera priors; ``points``: random frames per
    trial per Adam step; ``reject_px``: the least median error (px) at which a camera's
    detections in a frame are dropped as someone else's (0: never;
    :func:`~mjx_biomech.fitting.relabel.reject_views`).
    """

    model: object
    marker_set: str
    site_ids: tuple[int, ...]
    scale_prior: tuple[bool, ...]
    delta_px: float
    offset_weight: float
    scale_weight: float
    smooth_weight: float
    camera_weight: float
    points: int
    scale_sd: tuple[float, ...] = ()
    mirror: tuple[tuple[int, int], ...] = ()
    body_weight: float = 0.0
    reject_px: float = 0.0


class TrialArrays(eqx.Module):
    """A trial's arrays in the rig's camera order: ``keypoints`` (C, T, J, 2) px with NaN,
    ``confidence`` (C, T, J), frame ``times`` (T,) s."""

    keypoints: jax.Array
    confidence: jax.Array
    times: jax.Array

    @classmethod
    def from_capture(cls, capture: Capture, dtype) -> TrialArrays:
        return cls(*(jnp.asarray(x, dtype) for x in (capture.keypoints, capture.confidence, capture.times)))


class FitVariables(eqx.Module):
    """Everything a fit optimises.

    ``trajectories``: one per trial; ``log_scales`` (P,) unconstrained (the log scales of the
    groups other than ``overall`` are them squeezed into bounds, :meth:`scale_logs`);
    ``offsets`` (M, 3) of the marker set's sites in centimetres; ``camera`` (C, 6): a change of each camera's rotation vector
    (rad) and of its centre (m, world) while bundle adjustment is on. Moving the centre rather
    than ``tvec`` keeps rotation and position decoupled (``tvec = −R c`` swings with ``R``).
    """

    trajectories: tuple
    log_scales: jax.Array
    offsets: jax.Array
    camera: jax.Array

    def scale_logs(self, setup: FitSetup) -> jax.Array:
        """(P,) the log scales: ``log_scales`` where ``overall``, bounded elsewhere."""
        return anthropometry.bounded_log_scales(self.log_scales, np.asarray(setup.scale_prior), jnp)

    def params(self, setup: FitSetup) -> BodyParams:
        return BodyParams(jnp.exp(self.scale_logs(setup)), site_offsets(setup.model, setup.site_ids, self.offsets))

    def rig(self, rig: CameraRig, ba_on) -> CameraRig:
        return moved_rig(rig, self.camera, ba_on)


def optimiser_groups(tree: FitVariables):
    """``tree`` (variables, or their gradients) with every leaf replaced by its optimiser
    group: ``"camera"`` for the camera moves, ``"body"`` for the rest."""
    groups = jax.tree_util.tree_map(lambda _: "body", tree)
    return eqx.tree_at(lambda t: t.camera, groups, "camera")


def site_offsets(model, site_ids, offsets_cm: jax.Array) -> jax.Array:
    """(S, 3) m offsets of every site of ``model``: ``offsets_cm`` (M, 3) cm at ``site_ids``, 0 elsewhere."""
    S = len(model.site_names)
    return jnp.zeros((S, 3), offsets_cm.dtype).at[np.asarray(site_ids)].set(offsets_cm * OFFSET_UNIT_M)


def moved_rig(rig: CameraRig, camera: jax.Array, ba_on=1.0) -> CameraRig:
    """``rig`` with camera moves ``camera`` (C, 6) (rotation vector change, rad; centre change,
    m) applied where ``ba_on``, the gauge of bundle adjustment fixed: the first camera stays put
    (the world's position and orientation) and the second stays at its distance from the first
    (the world's scale, which images alone cannot tell: the whole scene and the person scaled
    about the first camera look the same), moving only on that sphere."""
    C = len(rig)
    mask = (jnp.arange(C) > 0)[:, None] * ba_on
    d = camera * mask
    rvec = rig.rvec + d[:, :3]
    centers = rig.centers + d[:, 3:]
    if C > 1:
        base = rig.centers[1] - rig.centers[0]
        radius = jnp.linalg.norm(base)
        arm = centers[1] - rig.centers[0]
        centers = centers.at[1].set(rig.centers[0] + radius * arm / jnp.linalg.norm(arm))
    return rig.with_extrinsics(rvec, -jnp.einsum("cij,cj->ci", rodrigues(rvec), centers))


def initial_variables(
    model, captures: Sequence[Capture], rig: CameraRig, marker_set: str, representation: str, knots_per_second: float,
    mlp_width: int, mlp_depth: int, key: jax.Array, dtype,
) -> FitVariables:
    """The start of a fit: per trial, a trajectory (``"spline"`` or ``"mlp"``) through the root
    pose of :func:`initialisation.initial_root` (the other coordinates neutral); the overall scale
    the median of the trials' guesses, the other scales 1; no offsets, no camera moves."""
    active = trajectories.observed_coordinates(model, marker_set) | trajectories.root_coordinates(model)
    root = trajectories.root_coordinates(model)
    trajs, scales = [], []
    for cap in captures:
        guess = initialisation.initial_root(model, cap, rig, marker_set)
        times = cap.times
        coords = trajectories.fill_missing(times, guess.coords)
        scales.append(guess.scale)
        # A straight line through the root's path: the affine part of the unbounded coordinates.
        A = np.stack([np.ones_like(times), times - times[0]], 1)
        line = np.linalg.lstsq(A, np.where(root, coords, 0.0), rcond=None)[0]
        cmap = trajectories.coordinate_map(model, intercept=np.where(root, line[0], 0.0), slope=np.where(root, line[1], 0.0),
                                           t0=float(times[0]), active=active)
        if representation == "spline":
            trajs.append(trajectories.spline_from_coords(cmap, times, coords, knots_per_second, dtype))
        else:
            key, sub = jax.random.split(key)
            trajs.append(trajectories.mlp_from_coords(cmap, times, coords, sub, mlp_width, mlp_depth, dtype))
    log_scales = np.zeros(len(model.scale_param_names))
    if "overall" in model.scale_param_names:
        log_scales[model.scale_param_names.index("overall")] = math.log(float(np.median(scales)))
    M = len(model.marker_site_ids(marker_set))
    return FitVariables(
        trajectories=tuple(trajs),
        log_scales=jnp.asarray(log_scales, dtype),
        offsets=jnp.zeros((M, 3), dtype),
        camera=jnp.zeros((len(rig), 6), dtype),
    )
