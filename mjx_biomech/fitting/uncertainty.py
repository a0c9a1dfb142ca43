"""Standard errors of a markerless fit, from the structured normal equations at its optimum.

The fit's objective is linearised in the structure of its bundle adjustment
(:mod:`~mjx_biomech.fitting.bundle_adjustment`): a pose ``u_f`` per frame (the trajectory's
unconstrained values) and the shared ``p`` (log scales, marker offsets in cm and, when bundle
adjustment moved them, the camera moves; held cameras are not in ``p``). The Huber weights at
the optimum enter as fixed weights (iteratively reweighted least squares), the priors as they are.
The Gauss–Newton (Laplace) covariance ``σ² N⁻¹`` is formed block by block
(:func:`~mjx_biomech.fitting.solvers.schur_lm.marginal_covariances`): ``Cov(p) = σ² S⁻¹`` of the
Schur complement, each frame's ``Cov(u_f) = σ² (A_f⁻¹ + W_f S⁻¹ W_fᵀ)``; no dense inverse of the
whole problem. The noise scale ``σ²`` is the objective's data part over its degrees of freedom,
``Σ r² / (residuals − parameters)``.

Joint angles. An MLP trajectory gets the per-frame covariance (the poses linearised frame by
frame: an MLP has too many weights for its own normal equations). A spline trajectory is what a
fit's last bundle adjustment makes of its per-frame poses: the least-squares spline through them
(:func:`~mjx_biomech.fitting.trajectories.spline_from_z`), a linear smoother ``H``, so its
covariance is ``H Cov(u) Hᵀ`` (per coordinate, over the frames that see it). A per-frame σ
would overstate a spline's error about ``sqrt(frames per control point)``-fold. The
coordinates' σ follow by the delta method through the coordinate map (the sigmoid into each
joint's range).

Scales. Only the scale of each body (the product of the groups it belongs to) is seen by the
data; a group's standard error is that of its bodies' scale (its first body, per axis where the
group is), ``overall``'s that of the geometric mean of its bodies' scales
(:func:`effective_log_scales`).
"""

from __future__ import annotations

import math
import time
from functools import partial

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from mjx_biomech.analysis.results import FitUncertainty
from mjx_biomech.capture.cameras import CameraRig
from mjx_biomech.capture.projection import project
from mjx_biomech.fitting import anthropometry, losses, trajectories
from mjx_biomech.fitting.bundle_adjustment import frame_points, frames_of, prior, shared_vector
from mjx_biomech.fitting.solvers.schur_lm import NormalEquations, marginal_covariances, normal_equations
from mjx_biomech.fitting.variables import OFFSET_UNIT_M, FitSetup, FitVariables, moved_rig
from mjx_biomech.program_cache import cached_jit

__all__ = ["effective_log_scales", "fit_uncertainty"]

# The spline refit's ridge (trajectories._control_by_least_squares): the smoother H is its hat matrix.
_SPLINE_RIDGE = 1e-6


def effective_log_scales(model, log_scales) -> jax.Array:
    """(P,) per scale parameter the log scale of its bodies (JAX, linear in ``log_scales`` (P,)):
    of the group's first body (its axis for a per-axis group), for ``overall`` the mean over
    its bodies (the person's size). These, not the groups' own values, are what images see."""
    logs = jnp.log(model.body_scales(jnp.exp(log_scales)))  # (B, 3)
    groups = {g.name: g for g in model.scale_groups}
    out = []
    for name in model.scale_param_names:
        base, _, axis = name.partition(".")
        group = groups[base]
        bodies = [model.body_names.index(b) for b in group.bodies]
        a = "xyz".index(axis) if axis else 0
        out.append(jnp.mean(logs[np.asarray(bodies), a]) if base == "overall" else logs[bodies[0], a])
    return jnp.stack(out)


def _irls_residual(u, p, frame, args):
    """A frame's Huber reprojection residuals with the Huber factor frozen at the current point:
    the value of :func:`~mjx_biomech.fitting.losses.reprojection_residuals`, the Jacobian of
    weighted least squares (IRLS)."""
    t, keypoints, confidence, weight = frame
    points, rig = frame_points(u, p, t, args)
    r = losses.reprojection_residuals(rig, points, keypoints, confidence, args[0].delta_px)
    uv = project(rig, points)
    kp, _ = losses.observation_weights(keypoints, confidence)
    d = uv - kp
    e2 = jax.lax.stop_gradient(jnp.sum(d * d, axis=-1))
    factor = jax.lax.stop_gradient(jnp.sqrt(jnp.sum(r * r, axis=-1) / jnp.where(e2 > 0, e2, 1.0)))
    return jnp.sqrt(weight) * (factor[..., None] * d).ravel()


@cached_jit
def _linearise(u, p, frames, args):
    eq = normal_equations(_irls_residual, prior, u, p, frames, args)

    def counts(uf, df):
        r = _irls_residual(uf, p, df, args)
        return jnp.sum(r != 0), jnp.sum(r * r) / df[3]

    observed, squared_px = jax.vmap(counts)(u, frames)
    jp = jax.jacfwd(prior)(p, args)
    data_diag = jnp.diagonal(eq.C) - jnp.sum(jp * jp, axis=0)
    rp = prior(p, args)
    return eq, jnp.sum(observed), jnp.sum(squared_px), data_diag, eq.cost - 0.5 * jnp.sum(rp * rp)


@cached_jit
def _coordinate_slopes(traj, times):
    """(T, C) d coordinate / d raw value of ``traj`` at ``times``: each coordinate is a function of its
    own raw value only, so the map's derivative is its diagonal."""
    z = traj.raw(times)
    return jax.jvp(partial(traj.cmap.to_coords, t=times), (z,), (jnp.ones_like(z),))[1]


def _seen(diag: np.ndarray) -> np.ndarray:
    """Which variables some residual sees: their Gauss–Newton diagonal is not 0 (an unseen
    variable's Jacobian is exactly 0: missing detections are masked on the inputs)."""
    return diag > 1e-12 * float(np.max(diag, initial=0.0))


def _factor(cov: np.ndarray) -> np.ndarray:
    """``F`` with ``F Fᵀ = cov`` (symmetric positive semi-definite; round-off below 0 dropped)."""
    lam, vec = np.linalg.eigh(0.5 * (cov + cov.T))
    return vec * np.sqrt(np.maximum(lam, 0.0))


def _spline_variance(traj, times, a_diag, seen, w, chol_p) -> np.ndarray:
    """(T, A) variance of the least-squares spline through per-frame poses of variance
    ``diag(A_f⁻¹)`` (T, A) and shared part ``W`` (T, A, np) (``chol_p``: ``F`` with
    ``F Fᵀ = S⁻¹``), per coordinate over the frames that see it (``seen`` (T, A))."""
    K = traj.control.shape[0]
    B = trajectories.SplineTrajectory.basis_matrix(times, K, traj.t_start, traj.t_end)
    out = np.full(a_diag.shape, np.nan)
    for c in range(a_diag.shape[1]):
        s = seen[:, c]
        if not s.any():
            continue
        Bs = B[s]
        M = np.linalg.inv(Bs.T @ Bs + _SPLINE_RIDGE * np.eye(K))  # K × K: the spline's own size
        G = Bs.T @ (a_diag[s, c, None] * Bs)
        local = np.einsum("tk,kl,tl->t", B, M @ G @ M, B)
        shared = B @ (M @ (Bs.T @ w[s, c, :])) @ chol_p
        out[:, c] = local + np.sum(shared * shared, axis=1)
    return out


def fit_uncertainty(v: FitVariables, setup: FitSetup, rig: CameraRig, trials, free_cameras: bool) -> FitUncertainty:
    """Standard errors of the fit ``v`` (see the module docstring).

    Args:
        v: the fitted variables; ``setup``, ``rig`` (the calibration the fit started from),
            ``trials`` (:class:`~mjx_biomech.fitting.variables.TrialArrays`, as the fit ended
            them: relabelled, views rejected): as in the fit.
        free_cameras: whether bundle adjustment moved the cameras (then they are in ``p``).

    The normal equations are assembled in the fit's precision and solved in float64: the
    Schur complement and the inverses need more than float32 (metres against radians against
    pixels).
    """
    started = time.perf_counter()
    model = setup.model
    u, frames, cmap0 = frames_of(v, trials)
    args = (setup, rig, cmap0, free_cameras)
    p = shared_vector(v, free_cameras)
    eq, observed, squared_px, data_diag, data_cost = _linearise(u, p, frames, args)
    with jax.enable_x64(True):
        cov_p, a_inv, w = marginal_covariances(NormalEquations(*(jnp.asarray(np.asarray(x, np.float64)) for x in eq)))
        cov_p, a_inv, w = (np.asarray(x, float) for x in (cov_p, a_inv, w))
    A = np.asarray(eq.A, float)
    a_diag_all = np.diagonal(A, axis1=1, axis2=2)
    seen = _seen(a_diag_all)
    splines = all(isinstance(t, trajectories.SplineTrajectory) for t in v.trajectories)
    pose_params = (sum(t.control.shape[0] for t in v.trajectories) * u.shape[1] if splines else int(seen.sum()))
    parameters = pose_params + int(_seen(np.asarray(data_diag, float)).sum())
    residuals = int(observed)
    dof = max(residuals - parameters, 1)
    unit = 2.0 * float(data_cost) / dof  # σ² of the weighted residuals
    noise_px = math.sqrt(float(squared_px) / dof)

    cov_p = unit * cov_p
    a_inv = unit * a_inv
    chol_p = _factor(cov_p)
    coordinate_std, start = [], 0
    for traj, trial in zip(v.trajectories, trials):
        times = np.asarray(trial.times, float)
        T = len(times)
        sl = slice(start, start + T)
        start += T
        a_diag = np.diagonal(a_inv[sl], axis1=1, axis2=2)
        if isinstance(traj, trajectories.SplineTrajectory):
            var = _spline_variance(traj, times, a_diag, seen[sl], w[sl], chol_p)
        else:
            shared = np.einsum("tap,pq->taq", w[sl], chol_p)
            var = np.where(seen[sl], a_diag + np.sum(shared * shared, axis=-1), np.nan)
        slope = np.asarray(_coordinate_slopes(traj, jnp.asarray(trial.times)), float)
        active = np.asarray(traj.cmap.active, int)
        std = np.zeros((T, model.num_coordinates))
        std[:, active] = np.abs(slope[:, active]) * np.sqrt(var)
        coordinate_std.append(std)

    P, M = len(model.scale_param_names), len(setup.site_ids)
    bounded = np.asarray(setup.scale_prior)
    # Derivatives jitted: one program each, not one per operation.
    L = np.asarray(jax.jit(jax.jacfwd(lambda raw: effective_log_scales(
        model, anthropometry.bounded_log_scales(raw, bounded, jnp))))(v.log_scales), float)
    scale_var = np.einsum("ij,jk,ik->i", L, cov_p[:P, :P], L)
    offset_sigma = OFFSET_UNIT_M * np.sqrt(np.diagonal(cov_p)[P:P + 3 * M]).reshape(M, 3)
    camera_sigma = None
    if free_cameras:
        C = len(rig)

        def pose(camera):
            moved = moved_rig(rig, camera.reshape(C, 6))
            return jnp.concatenate([moved.rvec, moved.centers], axis=1).ravel()

        J = np.asarray(jax.jit(jax.jacfwd(pose))(v.camera.ravel()), float)
        cov = (J @ cov_p[P + 3 * M:, P + 3 * M:] @ J.T).reshape(C, 6, C, 6)
        d = np.einsum("cici->ci", cov)
        camera_sigma = {name: {"rotation_deg": math.degrees(math.sqrt(max(d[c, :3].sum(), 0.0))),
                               "centre_mm": 1000 * math.sqrt(max(d[c, 3:].sum(), 0.0))}
                        for c, name in enumerate(rig.names)}
    return FitUncertainty(
        coordinate_std=tuple(coordinate_std),
        scale_sigma=dict(zip(model.scale_param_names, map(float, np.sqrt(scale_var)))),
        offset_sigma_m=offset_sigma,
        camera_sigma=camera_sigma,
        noise_px=noise_px,
        residuals=residuals,
        parameters=parameters,
        seconds=time.perf_counter() - started,
        marker_names=tuple(model.marker_names(setup.marker_set)),
    )
