"""Cameras at work, differentiable in points and in extrinsics: world points into each camera's
frame, OpenCV projection with distortion, undistortion, and (robust) triangulation of keypoints
seen by several cameras."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from mjx_biomech.capture.cameras import Camera, CameraRig
from mjx_biomech.errors import InputError
from mjx_biomech.program_cache import cached_jit

# Points nearer than this depth (m) are divided by 1 instead of by z, so that masking them
# afterwards (see ``points_camera``) leaves finite values and gradients.
_MIN_DEPTH = 1e-9


def _stacked(cams: Camera | CameraRig) -> tuple[CameraRig, bool]:
    """A rig view of ``cams`` and whether the caller passed a single camera."""
    if isinstance(cams, CameraRig):
        return cams, False
    if isinstance(cams, Camera):
        return CameraRig.from_cameras([cams]), True
    raise InputError(f"cams: expected a Camera or CameraRig, got {type(cams).__name__}")


def _per_camera(x: jax.Array, ndim: int) -> jax.Array:
    """(C, k) → (C, 1, ..., 1, k) to broadcast against (C, ...points..., k)."""
    return x.reshape(x.shape[:1] + (1,) * ndim + x.shape[1:])


@eqx.filter_jit
def points_camera(cams: Camera | CameraRig, points_world) -> jax.Array:
    """World points (..., 3) (m) in each camera's frame: (C, ..., 3), or (..., 3) for a Camera.

    The last component is the depth; a point with depth ≤ 0 is behind the camera and its
    projection is meaningless.
    """
    rig, single = _stacked(cams)
    X = jnp.asarray(points_world)
    if X.shape[-1:] != (3,):
        raise InputError(f"points_world: expected shape (..., 3), got {X.shape}")
    nd = X.ndim - 1
    Xc = jnp.einsum("cij,...j->c...i", rig.R, X) + _per_camera(rig.tvec, nd)
    return Xc[0] if single else Xc


def _distort(rig: CameraRig, xy: jax.Array) -> jax.Array:
    """Normalized undistorted (C, ..., 2) → normalized distorted (C, ..., 2)."""
    nd = xy.ndim - 2
    k1, k2, p1, p2, k3 = (_per_camera(rig.dist[:, i], nd) for i in range(5))
    x, y = xy[..., 0], xy[..., 1]
    r2 = x * x + y * y
    radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return jnp.stack([xd, yd], -1)


def _to_pixels(rig: CameraRig, xy: jax.Array) -> jax.Array:
    nd = xy.ndim - 2
    f = jnp.stack([rig.fx, rig.fy], -1)
    c = jnp.stack([rig.cx, rig.cy], -1)
    return xy * _per_camera(f, nd) + _per_camera(c, nd)


@cached_jit
def project(cams: Camera | CameraRig, points_world, return_depth: bool = False):
    """Pixels (C, ..., 2) of world points (..., 3) (m) in every camera (OpenCV model).

    A single :class:`Camera` gives (..., 2). With ``return_depth`` also returns the depth
    (C, ..., ) in metres; mask points whose depth is ≤ 0 (behind the camera): their pixels are
    finite but meaningless. Differentiable in the points and in every camera parameter.
    """
    rig, single = _stacked(cams)
    Xc = points_camera(rig, points_world)
    z = Xc[..., 2]
    z_safe = jnp.where(z > _MIN_DEPTH, z, 1.0)
    uv = _to_pixels(rig, _distort(rig, Xc[..., :2] / z_safe[..., None]))
    if single:
        uv, z = uv[0], z[0]
    return (uv, z) if return_depth else uv


@cached_jit
def undistort_points(cams: Camera | CameraRig, pixels, iterations: int = 10) -> jax.Array:
    """Normalized image coordinates ``(X/Z, Y/Z)`` (C, ..., 2) of observed pixels (C, ..., 2).

    Inverts the distortion by Newton's method from the distorted point (quadratic convergence;
    ``iterations`` = 10 reaches float precision for lens distortions of real cameras). NaN
    pixels stay NaN. A single Camera takes and gives (..., 2).
    """
    rig, single = _stacked(cams)
    uv = jnp.asarray(pixels)
    if single:
        uv = uv[None]
    if uv.shape[-1:] != (2,) or uv.shape[0] != len(rig):
        raise InputError(f"pixels: expected shape ({len(rig)}, ..., 2), got {jnp.shape(pixels)}")
    nd = uv.ndim - 2
    f = _per_camera(jnp.stack([rig.fx, rig.fy], -1), nd)
    c = _per_camera(jnp.stack([rig.cx, rig.cy], -1), nd)
    target = (uv - c) / f

    def newton(_, xy):
        distort = lambda p: _distort(rig, p)  # noqa: E731
        r, dx = jax.jvp(distort, (xy,), (jnp.zeros_like(xy).at[..., 0].set(1.0),))
        _, dy = jax.jvp(distort, (xy,), (jnp.zeros_like(xy).at[..., 1].set(1.0),))
        r = r - target
        # Solve the 2×2 system [dx dy] step = r per point, in closed form.
        det = dx[..., 0] * dy[..., 1] - dy[..., 0] * dx[..., 1]
        sx = (dy[..., 1] * r[..., 0] - dy[..., 0] * r[..., 1]) / det
        sy = (dx[..., 0] * r[..., 1] - dx[..., 1] * r[..., 0]) / det
        return xy - jnp.stack([sx, sy], -1)

    xy = jax.lax.fori_loop(0, iterations, newton, target)
    return xy[0] if single else xy


def _view_weights(keypoints: jax.Array, confidence) -> jax.Array:
    """Confidence weights (C, ...) with NaN keypoints or NaN/negative confidence set to 0."""
    kp_ok = jnp.all(jnp.isfinite(keypoints), axis=-1)
    w = jnp.ones(keypoints.shape[:-1]) if confidence is None else jnp.asarray(confidence)
    return jnp.where(kp_ok & jnp.isfinite(w) & (w > 0), w, 0.0)


def _dlt(rig: CameraRig, xy: jax.Array, w: jax.Array) -> jax.Array:
    """Weighted linear triangulation of normalized points xy (C, N, 2), weights (C, N) → (N, 3).

    Each view contributes ``w (x P₃ − P₁)`` and ``w (y P₃ − P₂)`` with ``P = [R | t]``; the
    point (``X₄ = 1``) minimises the stacked rows' squares. NaN for < 2 views.
    """
    P = jnp.concatenate([rig.R, rig.tvec[:, :, None]], axis=-1)  # (C, 3, 4)
    xy = jnp.where(w[..., None] > 0, xy, 0.0)
    rows_x = xy[..., 0:1] * P[:, None, 2] - P[:, None, 0]  # (C, N, 4)
    rows_y = xy[..., 1:2] * P[:, None, 2] - P[:, None, 1]
    A = jnp.concatenate([rows_x * w[..., None], rows_y * w[..., None]], axis=0)  # (2C, N, 4)
    A = jnp.moveaxis(A, 1, 0)  # (N, 2C, 4)
    # With X₄ = 1 a row's residual is the depth times the normalized image error, about the
    # point's lateral miss in metres, so views are compared in world units (weighted by w): the
    # point is the least-squares solution of A[:, :3] X = −A[:, 3], from its 3×3 normal
    # equations (a seventh of the time of the SVD of every A; measured on 235k points).
    M = jnp.einsum("nri,nrj->nij", A[..., :3], A[..., :3])
    b = -jnp.einsum("nri,nr->ni", A[..., :3], A[..., 3])
    enough = jnp.sum(w > 0, axis=0) >= 2
    M = jnp.where(enough[:, None, None], M, jnp.eye(3, dtype=M.dtype))
    pts = jnp.linalg.solve(M, b[..., None])[..., 0]
    return jnp.where(enough[:, None], pts, jnp.nan)


def _flatten_views(rig: CameraRig, keypoints, confidence):
    kp = jnp.asarray(keypoints)
    if kp.ndim < 2 or kp.shape[0] != len(rig) or kp.shape[-1] != 2:
        raise InputError(f"keypoints: expected shape ({len(rig)}, ..., 2), got {kp.shape}")
    if confidence is not None and jnp.shape(confidence) != kp.shape[:-1]:
        raise InputError(f"confidence: expected shape {kp.shape[:-1]}, got {jnp.shape(confidence)}")
    w = _view_weights(kp, confidence)
    batch = kp.shape[1:-1]
    kp = kp.reshape(len(rig), -1, 2)
    return kp, w.reshape(len(rig), -1), batch


@cached_jit
def triangulate(rig: CameraRig, keypoints, confidence=None) -> jax.Array:
    """World points (..., 3) (m) from pixels (C, ..., 2) by confidence-weighted linear DLT.

    Pixels are undistorted first. Views with NaN pixels, NaN or zero confidence are ignored;
    points seen in fewer than 2 views are NaN. ``confidence`` (C, ...) defaults to 1.
    """
    kp, w, batch = _flatten_views(rig, keypoints, confidence)
    xy = undistort_points(rig, jnp.where(w[..., None] > 0, kp, 0.0))
    return _dlt(rig, xy, w).reshape(batch + (3,))


@cached_jit
def triangulate_robust(rig: CameraRig, keypoints, confidence=None, threshold_px: float = 15.0):
    """Triangulation that tolerates one outlying view per point.

    The all-view DLT is kept when every view reprojects within ``threshold_px``. Otherwise each
    leave-one-view-out DLT is tried and the one with the smallest confidence-weighted mean
    reprojection error over its own views wins.

    Returns ``(points (..., 3) m, used (C, ...) bool)``: ``used`` marks the views that made
    each point.
    """
    kp, w, batch = _flatten_views(rig, keypoints, confidence)
    C = len(rig)
    xy = undistort_points(rig, jnp.where(w[..., None] > 0, kp, 0.0))
    # Subset 0 is every view, subset 1 + c leaves camera c out.
    keep = jnp.concatenate([jnp.ones((1, C)), 1.0 - jnp.eye(C)], axis=0)  # (S, C)
    ws = keep[:, :, None] * w[None]  # (S, C, N)
    pts = jax.vmap(lambda wi: _dlt(rig, xy, wi))(ws)  # (S, N, 3)
    reproj = jax.vmap(lambda p: project(rig, p))(pts)  # (S, C, N, 2)
    err = jnp.linalg.norm(reproj - kp[None], axis=-1)  # (S, C, N)
    used = ws > 0
    err_used = jnp.where(used, err, 0.0)
    score = jnp.sum(err_used * ws, axis=1) / jnp.sum(ws, axis=1)  # (S, N)
    enough = jnp.sum(used, axis=1) >= 2
    score = jnp.where(enough, score, jnp.inf)
    full_ok = jnp.all(err_used[0] <= threshold_px, axis=0) & enough[0]
    # With two cameras there is nothing to leave out.
    has_alternative = jnp.isfinite(jnp.min(score[1:], axis=0)) if C > 2 else jnp.zeros_like(full_ok)
    choice = jnp.where(full_ok | ~has_alternative, 0, 1 + jnp.argmin(score[1:], axis=0))
    n = jnp.arange(kp.shape[1])
    points = pts[choice, n]
    used_views = used[choice, :, n].T  # (C, N)
    return points.reshape(batch + (3,)), used_views.reshape((C,) + batch)
