"""Residuals and losses of a fit: robust reprojection error, 3D marker error, priors.

Every data term is a *residual* vector whose half squared norm is the robust (Huber) loss, so
the same function serves a first-order optimiser (``0.5 * sum(r**2)``) and a least-squares
solver (Levenberg–Marquardt takes ``r`` itself). Missing observations (NaN, zero confidence,
points behind a camera) are masked on the *inputs* with ``jnp.where``, so they contribute
neither to the value nor, through a NaN, to the gradient.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array

from mjx_biomech.capture.cameras import CameraRig
from mjx_biomech.capture.projection import project


def robust_residuals(diff: Array, weight: Array, delta: float) -> Array:
    """Residuals (..., D) whose half squared norm is the weighted Huber loss of ``|diff|``.

    ``0.5 * |r|² = w · huber_δ(|d|)`` with ``huber_δ(e) = e²/2`` for ``e ≤ δ`` and
    ``δ (e − δ/2)`` beyond: ``r = sqrt(w) · s(e) · d`` with ``s(e) = 1`` inside and
    ``sqrt(δ (2e − δ)) / e`` outside. ``diff`` (..., D) must be finite; ``weight`` (...) ≥ 0.
    """
    e2 = jnp.sum(diff * diff, axis=-1)
    outside = e2 > delta * delta
    e = jnp.sqrt(jnp.where(outside, e2, delta * delta))
    s = jnp.where(outside, jnp.sqrt(delta * (2 * e - delta)) / e, 1.0)
    return (jnp.sqrt(weight) * s)[..., None] * diff


def observation_weights(observed: Array, confidence: Array) -> tuple[Array, Array]:
    """``(safe_observed, weight)``: NaN observations replaced by 0 and their weight set to 0.

    ``observed`` (..., D) with NaN for missing, ``confidence`` (...) with 0 (or NaN) for missing.
    """
    ok = jnp.all(jnp.isfinite(observed), axis=-1) & jnp.isfinite(confidence) & (confidence > 0)
    return jnp.where(ok[..., None], observed, 0.0), jnp.where(ok, confidence, 0.0)


def reprojection_residuals(
    rig: CameraRig, points: Array, keypoints: Array, confidence: Array, delta_px: float = 10.0
) -> Array:
    """Confidence-weighted Huber residuals (C, ..., 2) in pixels.

    ``points`` (..., 3) m are projected by every camera of ``rig`` and compared with
    ``keypoints`` (C, ..., 2) px (NaN where not detected) weighted by ``confidence`` (C, ...).
    Points at depth ≤ 0 in a camera contribute nothing for that camera.
    """
    uv, depth = project(rig, points, return_depth=True)
    kp, w = observation_weights(keypoints, confidence)
    w = jnp.where(depth > 0, w, 0.0)
    return robust_residuals(uv - kp, w, delta_px)


def point_residuals(
    points: Array, targets: Array, weights: Array | None = None, delta_m: float | None = 0.05
) -> Array:
    """Weighted Huber residuals (..., 3) in metres between model ``points`` (..., 3) and 3D
    ``targets`` (..., 3) (e.g. .trc markers or triangulated keypoints; NaN where missing).

    ``delta_m=None``: plain weighted least squares, ``|r|² = w |d|²`` (OpenSim's IK objective).
    """
    w = jnp.ones(targets.shape[:-1], points.dtype) if weights is None else weights
    tgt, w = observation_weights(targets, w)
    if delta_m is None:
        return jnp.sqrt(w)[..., None] * (points - tgt)
    return robust_residuals(points - tgt, w, delta_m)


def smoothness_residuals(trajectory, times: Array, h: float) -> Array:
    """Second differences (N, C) of a trajectory at ``times`` (N,) with step ``h`` (s), divided
    by h², i.e. accelerations (rad/s², m/s²)."""
    q = jax.vmap(trajectory)(jnp.stack([times - h, times, times + h]))
    return (q[0] - 2 * q[1] + q[2]) / (h * h)


def sum_of_squares(residuals) -> Array:
    """``0.5 * Σ r²`` over every leaf of a pytree of residuals."""
    return 0.5 * sum(jnp.sum(r * r) for r in jax.tree_util.tree_leaves(residuals))
