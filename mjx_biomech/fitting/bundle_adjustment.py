"""Joint bundle adjustment: every frame's pose, the body and the cameras refined together.

A Levenberg–Marquardt (:mod:`mjx_biomech.fitting.solvers.schur_lm`) over the fit's objective on
every frame of every trial. A frame's pose is ``u``: the trajectory's unconstrained values of
the active coordinates (logits of bounded ones, the root's own values), so joint ranges hold;
the shared vector ``p`` stacks the log scales, the marker offsets (cm) and, when the cameras are
free, the camera moves. The same problem at the fit's optimum gives its standard errors
(:mod:`mjx_biomech.fitting.uncertainty`).

:func:`spline_fit` solves the same problem with every pose on its trial's spline (the fit's
Levenberg–Marquardt solver, :mod:`mjx_biomech.fitting.solvers.spline_lm`): the same residuals and
per-frame linearisation, the poses' blocks summed into the control points' band.
"""

from __future__ import annotations

from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np

from mjx_biomech.body.rotations import rodrigues
from mjx_biomech.capture.cameras import CameraRig
from mjx_biomech.fitting import losses, trajectories
from mjx_biomech.fitting.objective import prior_residuals
from mjx_biomech.fitting.solvers import Progress, spline_lm
from mjx_biomech.fitting.solvers.schur_lm import NormalEquations, schur_levenberg_marquardt
from mjx_biomech.fitting.variables import OFFSET_UNIT_M, FitSetup, FitVariables

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


def normal_equations(u, p, frames, args) -> NormalEquations:
    """The Gauss–Newton system of :func:`_residual` and :func:`prior` (what
    :func:`~mjx_biomech.fitting.solvers.schur_lm.normal_equations` gives by ``jax.jacfwd``),
    assembled from the problem's structure.

    A residual pair (camera c, marker j) depends on the pose, the scales, marker j's own offset
    and camera c's own extrinsics, nothing else: per frame the markers' Jacobian with respect to
    the pose is the model's closed form (:meth:`BiomechModel.marker_jacobian`, chained with the
    coordinate map), with respect to the log scales a forward-mode derivative of P directions,
    with respect to an offset its body's rotation; the projections' derivatives with respect to
    each point and each camera's extrinsics come per point and per camera. The shared block is
    accumulated in that block structure (scales dense, offsets per marker, cameras per camera)
    and the camera moves' gauge (:func:`~mjx_biomech.fitting.variables.moved_rig`) chained in
    once at the end: per frame ``O(C·J·(A + P + 9)²)`` work instead of the dense ``O(C·J·np²)``
    of ``J_pᵀ J_p`` with ``np = P + 3J + 6C`` columns.
    """
    setup, rig, cmap, free_cameras = args
    model = setup.model
    dtype = p.dtype
    P, J, C = len(model.scale_param_names), len(setup.site_ids), len(rig)
    sites = np.asarray(setup.site_ids)
    bodies = np.asarray(model.mj_model.site_bodyid)[sites]
    v = unpack_shared(p, setup, C, free_cameras)

    def extrinsics(cam):
        moved = unpack_shared(p.at[P + 3 * J:].set(cam), setup, C, free_cameras).rig(rig, 1.0) if free_cameras else rig
        return jnp.concatenate([moved.rvec, moved.tvec], -1)  # (C, 6)

    cam = p[P + 3 * J:]
    ext = extrinsics(cam)
    G = jax.jacfwd(extrinsics)(cam) if free_cameras else jnp.zeros((C, 6, 0), dtype)  # (C, 6, 6C)
    rot = jax.vmap(rodrigues)(ext[:, :3])  # (C, 3, 3)
    d_rot = jax.vmap(jax.jacfwd(rodrigues))(ext[:, :3])  # (C, 3, 3, 3)

    def residuals(points, e, kp, conf, w):
        # (C, J', 2) for points (J', 3) with extrinsics e (C, 6).
        r = losses.reprojection_residuals(rig.with_extrinsics(e[:, :3], e[:, 3:]), points, kp, conf, setup.delta_px)
        return jnp.sqrt(w) * r

    def points_of(coords, logs):
        params = unpack_shared(p.at[:P].set(logs), setup, C, free_cameras).params(setup)
        return model.markers(coords, params, setup.marker_set)

    def frame(x):
        uf, (t, kp, conf, w) = x
        coords_of = lambda z: cmap.to_coords(z[None], t[None])[0]
        dcoords = jax.jacfwd(coords_of)(uf)  # (coords, A)
        coords = coords_of(uf)
        kin, jac = model.marker_jacobian(coords, v.params(setup), sites=sites)
        points = kin.site_xpos  # (J, 3)
        X_u = jnp.einsum("jxc,ca->jxa", jac, dcoords)  # (J, 3, A)
        X_s = jax.jacfwd(lambda logs: points_of(coords, logs))(p[:P])  # (J, 3, P)
        X_o = kin.xmat[bodies] * OFFSET_UNIT_M  # (J, 3, 3)
        r = residuals(points, ext, kp, conf, w)  # (C, J, 2)
        # Each point's projections by every camera, differentiated with respect to that point.
        R_x = jax.vmap(jax.jacfwd(lambda x, k, c: residuals(x[None], ext, k[:, None], c[:, None], w)[:, 0]),
                       out_axes=1)(points, jnp.moveaxis(kp, 1, 0), jnp.moveaxis(conf, 1, 0))  # (C, J, 2, 3)
        # Each point's information over the cameras: its residual rows reduced to 3.
        W = jnp.einsum("cjrx,cjry->jxy", R_x, R_x)
        h = jnp.einsum("cjrx,cjr->jx", R_x, r)
        WX_u = jnp.einsum("jxy,jya->jxa", W, X_u)
        WX_s = jnp.einsum("jxy,jya->jxa", W, X_s)
        A = jnp.einsum("jxa,jxb->ab", X_u, WX_u)
        gq = jnp.einsum("jxa,jx->a", X_u, h)
        B = [jnp.einsum("jxa,jxb->ab", WX_u, X_s), jnp.einsum("jxa,jxb->ajb", WX_u, X_o).reshape(-1, 3 * J)]
        blocks = dict(
            ss=jnp.einsum("jxa,jxb->ab", X_s, WX_s), so=jnp.einsum("jxa,jxb->ajb", WX_s, X_o),
            oo=jnp.einsum("jxa,jxy,jyb->jab", X_o, W, X_o), gs=jnp.einsum("jxa,jx->a", X_s, h),
            go=jnp.einsum("jxa,jx->ja", X_o, h), cost=0.5 * jnp.sum(r * r),
        )
        if free_cameras:
            # Camera c's residuals depend on its extrinsics only through the point in its frame,
            # X = R(rvec) x + tvec: d r/d tvec = d r/d x · Rᵀ, d r/d rvec = that · (dR/d rvec) x.
            dr_dX = jnp.einsum("cjrx,cyx->cjry", R_x, rot)
            dX_drvec = jnp.einsum("cabk,jb->cjak", d_rot, points)
            Y_e = jnp.concatenate([jnp.einsum("cjra,cjak->cjrk", dr_dX, dX_drvec), dr_dX], -1)  # (C, J, 2, 6)
            Z = jnp.einsum("cjrx,cjrk->cjxk", R_x, Y_e)  # (C, J, 3, 6)
            blocks.update(ee=jnp.einsum("cjrk,cjrl->ckl", Y_e, Y_e), se=jnp.einsum("jxa,cjxk->ack", X_s, Z),
                          oe=jnp.einsum("jxa,cjxk->jack", X_o, Z), ge=jnp.einsum("cjrk,cjr->ck", Y_e, r))
            B.append(jnp.einsum("ack,ckq->aq", jnp.einsum("jxa,cjxk->ack", X_u, Z), G))
        return blocks, (A, jnp.concatenate(B, -1), gq)

    # Whole batches only: lax.map traces (and compiles) its body once more for a remainder, so the
    # frames are padded to a multiple of the batch with copies of the last one that see nothing.
    F, batch = u.shape[0], 32
    pad = (-F) % batch if F > batch else 0
    if pad:
        t, kp, conf, w = frames
        u, t, kp = (jnp.concatenate([x, jnp.repeat(x[-1:], pad, axis=0)]) for x in (u, t, kp))
        conf, w = (jnp.concatenate([x, jnp.zeros((pad,) + x.shape[1:], x.dtype)]) for x in (conf, w))
        frames = (t, kp, conf, w)
    per, (A, B, gq) = jax.lax.map(frame, (u, frames), batch_size=batch)
    A, B, gq = A[:F], B[:F], gq[:F]
    sums = jax.tree_util.tree_map(lambda x: jnp.sum(x, 0), per)
    n_o = 3 * J
    oo = jnp.zeros((J, 3, J, 3), dtype).at[jnp.arange(J), :, jnp.arange(J), :].set(sums["oo"]).reshape(n_o, n_o)
    so = sums["so"].reshape(P, n_o)
    rows = [[sums["ss"], so], [so.T, oo]]
    gp = [sums["gs"], sums["go"].ravel()]
    if free_cameras:
        se = jnp.einsum("ack,ckq->aq", sums["se"], G)
        oe = jnp.einsum("jack,ckq->jaq", sums["oe"], G).reshape(n_o, -1)
        ee = jnp.einsum("ckp,ckl,clq->pq", G, sums["ee"], G)
        rows = [rows[0] + [se], rows[1] + [oe], [se.T, oe.T, ee]]
        gp.append(jnp.einsum("ck,ckq->q", sums["ge"], G))
    Jprior, rp = jax.jacfwd(lambda q: (prior(q, args),) * 2, has_aux=True)(p)
    Cmat = jnp.block(rows) + Jprior.T @ Jprior
    return NormalEquations(A, B, gq, Cmat, jnp.concatenate(gp) + Jprior.T @ rp, sums["cost"] + 0.5 * jnp.sum(rp * rp))


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
                                        stage=STAGE, assemble=normal_equations)
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


def spline_fit(
    v: FitVariables, setup: FitSetup, rig: CameraRig, trials, iterations: int, free_cameras: bool,
    progress: Progress | None = None, stage: str = "lm", rtol: float = 1e-6,
) -> tuple[FitVariables, list[float]]:
    """Levenberg–Marquardt on the spline trajectories' control points, the body parameters and
    (``free_cameras``) the camera moves, over every frame of every trial: at most ``iterations``
    Gauss–Newton systems (banded, :mod:`~mjx_biomech.fitting.solvers.spline_lm`), stopping once
    an iteration lowers the objective by less than ``rtol`` of it. The objective is the fit's on every
    frame (:func:`~mjx_biomech.fitting.objective.residual_vector`, cameras held where not free).

    Returns ``(v, history)``: the variables and the objective after every accepted step.
    """
    dtype = v.log_scales.dtype
    _, data, cmap0 = frames_of(v, trials)
    index, weights, offsets, first = [], [], [], 0
    for traj, trial in zip(v.trajectories, trials):
        times = np.asarray(trial.times, float)
        K = traj.control.shape[0]
        i, w = spline_lm.spline_basis(times, K, traj.t_start, traj.t_end, first)
        index.append(i)
        weights.append(w)
        offsets.append(traj.cmap.root_line(times))
        first += K
    basis = spline_lm.Basis(jnp.asarray(np.concatenate(index)), jnp.asarray(np.concatenate(weights), dtype),
                            jnp.asarray(np.concatenate(offsets), dtype))
    control = jnp.concatenate([traj.control for traj in v.trajectories])
    # The cameras are always among the shared variables, held where not free: one compiled
    # program serves both kinds of solve.
    p0 = shared_vector(v, True)
    held = np.zeros(p0.shape, bool)
    held[p0.shape[0] - 6 * len(rig):] = not free_cameras
    control, p, history = spline_lm.spline_levenberg_marquardt(
        _residual, prior, control, p0, data, basis, (setup, rig, cmap0, True), iterations=iterations, rtol=rtol,
        progress=progress, stage=stage, assemble=normal_equations, held=held)
    shared = unpack_shared(p, setup, len(rig), True)
    trajs, start = [], 0
    for traj in v.trajectories:
        K = traj.control.shape[0]
        trajs.append(trajectories.SplineTrajectory(cmap=traj.cmap, control=control[start:start + K], t_start=traj.t_start,
                                                   t_end=traj.t_end))
        start += K
    return FitVariables(tuple(trajs), shared.log_scales, shared.offsets, shared.camera if free_cameras else v.camera), history
