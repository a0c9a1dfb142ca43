"""Fitting a scaled body model to multi-camera 2D keypoints.

One objective, several scopes and two solvers:

- data: the confidence-weighted Huber reprojection error (:mod:`mjx_biomech.fitting.losses`) of the
  model's markers for every trial, as a mean over frames;
- priors: L2 on the marker offsets (in centimetres) and a weak one on the log of every scale
  group but ``overall`` (which fixes the product ``overall × group`` that the data cannot split);
- scope: one or several trials of one person share :class:`BodyParams` (bilevel); camera
  extrinsics are freed after ``ba_start_fraction`` of the steps (bundle adjustment: a
  Levenberg–Marquardt over every frame's pose, the body and the cameras, see
  :mod:`mjx_biomech.fitting.solvers.schur_lm`), the first camera held and the second kept at its distance from
  it to fix the gauge;
- detector errors: Huber residuals bound outliers, and left/right detections that the fitted
  model says were exchanged are swapped back, per camera, frame and mirror pair;
- solvers: optax AdamW with the paper's schedule on random time points (any trajectory), or
  Levenberg–Marquardt from optimistix on every frame (spline trajectories).

Each solver's step is compiled once per model, marker set, array shapes and settings, and the
data enter as arguments, so fits of same-shaped captures reuse the compiled code.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from dataclasses import replace as _replace
from pathlib import Path
from typing import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import optimistix as optx
from tqdm.auto import tqdm

from mjx_biomech.analysis.results import FitResult, TrialResult, fit_metrics
from mjx_biomech.body.params import BodyParams
from mjx_biomech.capture.cameras import CameraRig, project, rodrigues
from mjx_biomech.capture.captures import Capture, mirror_pairs
from mjx_biomech.errors import InputError
from mjx_biomech.fitting import losses, trajectories
from mjx_biomech.fitting.solvers import schur_lm as bundle

# The paper's AdamW: β1 = 0.8, weight decay 1e-5, learning rate decaying 1000-fold (1e-4 → 1e-7).
ADAM_B1 = 0.8
WEIGHT_DECAY = 1e-5
LR_DECAY = 1e-3
OFFSET_UNIT_M = 0.01


@dataclass(frozen=True)
class _Setup:
    """What the compiled functions close over (hashable; the model hashes by identity)."""

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


class FitVariables(eqx.Module):
    """Everything a fit optimises.

    ``trajectories``: one per trial; ``log_scales`` (P,); ``offsets`` (M, 3) of the marker
    set's sites in centimetres; ``camera`` (C, 6): a change of each camera's rotation vector
    (rad) and of its centre (m, world) while bundle adjustment is on. Moving the centre rather
    than ``tvec`` keeps rotation and position decoupled (``tvec = −R c`` swings with ``R``).
    """

    trajectories: tuple
    log_scales: jax.Array
    offsets: jax.Array
    camera: jax.Array

    def params(self, setup: _Setup) -> BodyParams:
        return BodyParams(jnp.exp(self.log_scales), site_offsets(setup.model, setup.site_ids, self.offsets))

    def rig(self, rig: CameraRig, ba_on) -> CameraRig:
        return moved_rig(rig, self.camera, ba_on)


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


class _Trial(eqx.Module):
    """A trial's arrays in the rig's camera order: keypoints (C, T, J, 2) px with NaN,
    confidence (C, T, J), frame times (T,) s."""

    keypoints: jax.Array
    confidence: jax.Array
    times: jax.Array


@dataclass(frozen=True)
class _Relabel:
    """Left/right relabelling: mirror ``pairs`` (K, 2), the threshold (px) and the Adam steps
    at which it runs."""

    pairs: np.ndarray
    threshold_px: float
    at_steps: frozenset


def _trial_residuals(setup: _Setup, traj, params: BodyParams, rig: CameraRig, trial: _Trial, frames) -> jax.Array:
    q = traj(trial.times[frames])
    pts = trajectories.markers_along(setup.model, params, q, setup.marker_set)
    return losses.reprojection_residuals(rig, pts, trial.keypoints[:, frames], trial.confidence[:, frames], setup.delta_px)


def _prior_residuals(setup: _Setup, v: FitVariables) -> list[jax.Array]:
    # Camera moves in units of 0.01 rad and 1 cm: the data decide, the prior only fixes what
    # they leave free (a camera that sees too little of the person to be placed).
    out = [math.sqrt(setup.offset_weight) * v.offsets.ravel(), math.sqrt(setup.camera_weight) * v.camera.ravel() / 0.01]
    if any(setup.scale_prior):
        out.append(math.sqrt(setup.scale_weight) * v.log_scales[np.flatnonzero(setup.scale_prior)])
    return out


def residual_vector(v: FitVariables, args) -> jax.Array:
    """Every residual of the objective on every frame (the least-squares form): each trial's
    reprojection residuals divided by sqrt(frames), then the priors."""
    setup, rig, trials, ba_on = args
    params = v.params(setup)
    r = v.rig(rig, ba_on)
    parts = []
    for traj, trial in zip(v.trajectories, trials):
        T = trial.times.shape[0]
        parts.append(_trial_residuals(setup, traj, params, r, trial, jnp.arange(T)).ravel() / math.sqrt(T))
    return jnp.concatenate(parts + _prior_residuals(setup, v))


def _minibatch_loss(v: FitVariables, setup: _Setup, rig: CameraRig, trials, ba_on, key) -> jax.Array:
    params = v.params(setup)
    r = v.rig(rig, ba_on)
    total = 0.0
    for traj, trial, k in zip(v.trajectories, trials, jax.random.split(key, len(trials))):
        T = trial.times.shape[0]
        n = min(setup.points, T)
        frames = jax.random.choice(k, T, (n,), replace=False)
        total = total + losses.sum_of_squares(_trial_residuals(setup, traj, params, r, trial, frames)) / n
        if setup.smooth_weight > 0:
            h = 1.0 / 120.0
            acc = losses.smoothness_residuals(traj, trial.times[frames], h)
            total = total + 0.5 * setup.smooth_weight * jnp.sum(acc * acc) / n
    return total + losses.sum_of_squares(_prior_residuals(setup, v))


def _optimisers(ba_lr: float):
    # Learning rates enter each step as numbers, so a schedule needs no recompilation.
    main = optax.chain(optax.scale_by_adam(b1=ADAM_B1), optax.add_decayed_weights(WEIGHT_DECAY))
    cams = optax.scale_by_adam(b1=ADAM_B1)
    return main, cams


@eqx.filter_jit
def _adam_step(v, opt_state, setup, rig, trials, ba_on, lr, ba_lr, key):
    """One AdamW step on random frames: (variables, optimiser state, loss)."""
    key, sub = jax.random.split(key)
    loss, g = eqx.filter_value_and_grad(_minibatch_loss)(v, setup, rig, trials, ba_on, sub)
    main, cams = _optimisers(0.0)
    vp = eqx.filter(v, eqx.is_inexact_array)
    g_cam, g_main = g.camera, eqx.tree_at(lambda t: t.camera, g, jnp.zeros_like(g.camera))
    u_main, s_main = main.update(g_main, opt_state[0], vp)
    u_cam, s_cam = cams.update(g_cam, opt_state[1])
    u = jax.tree_util.tree_map(lambda x: -lr * x, u_main)
    u = eqx.tree_at(lambda t: t.camera, u, -ba_lr * ba_on * u_cam)
    return eqx.apply_updates(v, u), (s_main, s_cam), loss, key


def _lm_solve(v, setup, rig, trials, ba_on, steps: int):
    solver = optx.LevenbergMarquardt(rtol=1e-8, atol=1e-8)
    sol = optx.least_squares(
        residual_vector, solver, v, args=(setup, rig, trials, ba_on), max_steps=steps, throw=False
    )
    return sol.value


_lm_solve_jit = eqx.filter_jit(_lm_solve)


# ------------------------------------------------------------------ left/right relabelling
@eqx.filter_jit
def _left_right_swaps(v: FitVariables, setup: _Setup, rig: CameraRig, trials, ba_on, pairs, threshold_px: float):
    """Per trial, (C, T, K) bool: where the two detections of mirror pair k (``pairs`` (K, 2))
    fit the current model better exchanged, by more than ``threshold_px`` summed over the two
    (a detection whose partner is missing counts alone)."""
    params = v.params(setup)
    r = v.rig(rig, ba_on)
    a, b = pairs[:, 0], pairs[:, 1]
    out = []
    for traj, t in zip(v.trajectories, trials):
        points = trajectories.markers_along(setup.model, params, traj(t.times), setup.marker_set)
        uv = project(r, points)
        kp, w = losses.observation_weights(t.keypoints, t.confidence)
        ok_a, ok_b = w[..., a] > 0, w[..., b] > 0

        def dist(i, j):
            return jnp.linalg.norm(uv[..., i, :] - kp[..., j, :], axis=-1)

        kept = jnp.where(ok_a, dist(a, a), 0.0) + jnp.where(ok_b, dist(b, b), 0.0)
        exchanged = jnp.where(ok_b, dist(a, b), 0.0) + jnp.where(ok_a, dist(b, a), 0.0)
        out.append(exchanged + threshold_px < kept)
    return out


def _exchange(trial: _Trial, swap, pairs) -> _Trial:
    """``trial`` with the keypoints and confidences of each pair exchanged where ``swap`` (C, T, K)."""
    perm_a = jnp.asarray(pairs[:, 0])
    perm_b = jnp.asarray(pairs[:, 1])

    def apply(x, extra_dims):
        s = swap.reshape(swap.shape + (1,) * extra_dims)
        xa, xb = x[:, :, perm_a], x[:, :, perm_b]
        return x.at[:, :, perm_a].set(jnp.where(s, xb, xa)).at[:, :, perm_b].set(jnp.where(s, xa, xb))

    return _Trial(apply(trial.keypoints, 1), apply(trial.confidence, 0), trial.times)


def _relabel_left_right(v, setup, rig, trials, ba_on, pairs, swapped, threshold_px):
    """Exchange left/right detections that the model says a detector mixed up; ``swapped`` (per
    trial, (C, T, K) bool) accumulates which pairs now differ from the capture."""
    if len(pairs) == 0:
        return trials, swapped
    masks = _left_right_swaps(v, setup, rig, trials, ba_on, pairs, threshold_px)
    trials = tuple(_exchange(t, m, pairs) for t, m in zip(trials, masks))
    swapped = tuple(s ^ m for s, m in zip(swapped, masks))
    return trials, swapped


# ------------------------------------------------------------------ joint bundle adjustment
# Levenberg–Marquardt over every frame's pose, the body parameters and the cameras together
# (:mod:`mjx_biomech.fitting.solvers.schur_lm`). A frame's pose is ``u``: the trajectory's unconstrained values of
# the active coordinates (logits of bounded ones, the root's own values), so joint ranges hold.


def _shared_vector(v: FitVariables) -> jax.Array:
    return jnp.concatenate([v.log_scales, v.offsets.ravel(), v.camera.ravel()])


def _unpack_shared(p, setup: _Setup, cameras: int) -> FitVariables:
    P, M = len(setup.model.scale_param_names), len(setup.site_ids)
    return FitVariables((), p[:P], p[P:P + 3 * M].reshape(M, 3), p[P + 3 * M:].reshape(cameras, 6))


def _ba_residual(u, p, frame, args):
    setup, rig, cmap = args
    t, keypoints, confidence, weight = frame
    v = _unpack_shared(p, setup, len(rig))
    coords = cmap.to_coords(u[None], t[None])[0]
    points = setup.model.markers(coords, v.params(setup), setup.marker_set)
    r = losses.reprojection_residuals(v.rig(rig, 1.0), points, keypoints, confidence, setup.delta_px)
    return jnp.sqrt(weight) * r.ravel()


def _ba_prior(p, args):
    setup, rig, _ = args
    return jnp.concatenate(_prior_residuals(setup, _unpack_shared(p, setup, len(rig))))


def _joint_bundle_adjustment(v: FitVariables, setup: _Setup, rig: CameraRig, trials, iterations: int, progress: bool) -> FitVariables:
    """Bundle adjustment proper: per-frame poses, body parameters and camera moves refined
    together on every frame of every trial; then each spline trajectory is refitted to its
    trial's refined poses (an MLP keeps its weights and follows in the steps after)."""
    dtype = v.log_scales.dtype
    cmap0 = None
    us, frames = [], []
    for traj, trial in zip(v.trajectories, trials):
        times = np.asarray(trial.times, float)
        T = len(times)
        us.append(np.asarray(traj.raw(trial.times), float) + traj.cmap.root_line(times))
        cmap0 = cmap0 or _replace(traj.cmap, intercept=(0.0,) * len(traj.cmap.intercept), slope=(0.0,) * len(traj.cmap.slope))
        frames.append((trial.times, jnp.moveaxis(trial.keypoints, 1, 0), jnp.moveaxis(trial.confidence, 1, 0),
                       jnp.full((T,), 1.0 / T, dtype)))
    u = jnp.asarray(np.concatenate(us), dtype)
    data = jax.tree_util.tree_map(lambda *x: jnp.concatenate(x), *frames)
    u, p, _ = bundle.schur_levenberg_marquardt(_ba_residual, _ba_prior, u, _shared_vector(v), data, (setup, rig, cmap0),
                                               iterations=iterations, progress=progress)
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


@eqx.filter_jit
def _objective(v, setup, rig, trials, ba_on):
    return 0.5 * jnp.sum(residual_vector(v, (setup, rig, trials, ba_on)) ** 2)


# ------------------------------------------------------------------ set-up
def _check_inputs(model, captures: Sequence[Capture], rig: CameraRig, marker_set: str) -> list[Capture]:
    if isinstance(captures, Capture):
        captures = [captures]
    if not captures:
        raise InputError("captures: expected at least one Capture, got none")
    names = model.marker_names(marker_set)
    out = []
    for i, cap in enumerate(captures):
        if not isinstance(cap, Capture):
            raise InputError(f"captures[{i}]: expected a Capture, got {type(cap).__name__}")
        label = f"capture {cap.name!r}" if cap.name else f"captures[{i}]"
        if tuple(cap.keypoint_names) != tuple(names):
            missing = [n for n in names if n not in cap.keypoint_names]
            raise InputError(
                f"{label}: its {cap.num_keypoints} keypoints are not marker set {marker_set!r} "
                f"({len(names)} keypoints{'; missing ' + ', '.join(missing[:5]) if missing else ', in another order'})"
            )
        if cap.num_frames < 2:
            raise InputError(f"{label}: expected at least 2 frames, got {cap.num_frames}")
        out.append(cap.aligned_to(rig))
    return out


def _initial_variables(model, captures, rig, marker_set, representation, knots_per_second, mlp_width, mlp_depth, key, dtype):
    active = trajectories.observed_coordinates(model, marker_set) | trajectories.root_coordinates(model)
    trajs, scales = [], []
    for cap in captures:
        guess = trajectories.initial_root(model, cap, rig, marker_set)
        times = cap.times
        coords = trajectories.fill_missing(times, guess.coords)
        scales.append(guess.scale)
        root = trajectories.root_coordinates(model)
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
    P = len(model.scale_param_names)
    log_scales = np.zeros(P)
    if "overall" in model.scale_param_names:
        log_scales[model.scale_param_names.index("overall")] = math.log(float(np.median(scales)))
    M = len(model.marker_site_ids(marker_set))
    return FitVariables(
        trajectories=tuple(trajs),
        log_scales=jnp.asarray(log_scales, dtype),
        offsets=jnp.zeros((M, 3), dtype),
        camera=jnp.zeros((len(rig), 6), dtype),
    )


def _fingerprint(**settings) -> str:
    return json.dumps(settings, sort_keys=True, default=str)


def _save_checkpoint(folder: Path, state, meta: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / ".checkpoint.eqx.tmp"
    eqx.tree_serialise_leaves(tmp, state)
    os.replace(tmp, folder / "checkpoint.eqx")
    tmp_meta = folder / ".checkpoint.json.tmp"
    tmp_meta.write_text(meta)
    os.replace(tmp_meta, folder / "checkpoint.json")


def _load_checkpoint(folder: Path, like, meta: str):
    path = folder / "checkpoint.eqx"
    if not path.exists():
        return None
    stored = (folder / "checkpoint.json").read_text() if (folder / "checkpoint.json").exists() else ""
    if stored != meta:
        raise InputError(
            f"{path}: the checkpoint belongs to a fit with other data or settings; "
            "use another checkpoint_dir or delete it to start afresh"
        )
    return eqx.tree_deserialise_leaves(path, like)


# ------------------------------------------------------------------ the fit
def fit(
    model,
    captures: Capture | Sequence[Capture],
    rig: CameraRig,
    marker_set: str,
    representation: str = "spline",
    solver: str = "adam",
    steps: int = 2000,
    lr: float = 3e-2,
    bundle_adjust: bool = True,
    ba_start_fraction: float = 0.75,
    ba_lr: float = 1e-3,
    ba_iterations: int = 10,
    time_points_per_step: int = 300,
    knots_per_second: float = 12.0,
    mlp_width: int = 128,
    mlp_depth: int = 3,
    huber_delta_px: float = 10.0,
    offset_weight: float = 1.0,
    scale_weight: float = 1.0,
    smooth_weight: float = 0.0,
    camera_weight: float = 1.0,
    relabel_left_right: bool = True,
    seed: int = 0,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 500,
    progress: bool = True,
    callback: Callable[[int, float], None] | None = None,
    dtype=None,
) -> FitResult:
    """Fit trajectories, body parameters and (optionally) camera extrinsics to 2D keypoints.

    Args:
        model: a ``BiomechModel`` with ``marker_set``.
        captures: one :class:`Capture` or several trials of the same person (they share
            :class:`BodyParams`); keypoints must be the marker set's, in its order.
        rig: the calibration; every capture must name exactly its cameras.
        representation: ``"spline"`` (cubic B-spline, ``knots_per_second``) or ``"mlp"``
            (the paper's implicit MLP, ``mlp_width`` × ``mlp_depth``).
        solver: ``"adam"`` (AdamW, β1 = 0.8, weight decay 1e-5, learning rate ``lr`` decaying
            exponentially 1000-fold over ``steps``, ``time_points_per_step`` random frames per
            trial per step) or ``"lm"`` (Levenberg–Marquardt on every frame, ``steps``
            iterations; spline only).
        bundle_adjust: free camera extrinsics for the last ``1 − ba_start_fraction`` of the
            steps, the gauge fixed by the first camera (held) and the distance from it to the
            second (kept). At that point a Levenberg–Marquardt bundle adjustment refines every
            frame's pose, the body parameters and the cameras together (``ba_iterations``
            iterations, :mod:`mjx_biomech.fitting.solvers.schur_lm`); the steps after it refine the trajectories
            with the cameras moving at Adam learning rate ``ba_lr`` (decaying 1000-fold over
            that phase), and a last bundle adjustment ends the fit.
        huber_delta_px: Huber threshold (px). offset_weight: prior weight per (1 cm)² of marker
            offset. scale_weight: prior weight on log scales of groups other than ``overall``.
            smooth_weight: weight of squared accelerations (Adam only). camera_weight: prior
            weight per (0.01 rad)² and (1 cm)² of camera movement in bundle adjustment, divided
            by the number of frames (the reprojection term averages over frames, so this is
            the weight against the sum over frames: a longer capture outweighs it more).
        relabel_left_right: exchange a camera's left and right detections of a mirror pair
            (``left_knee``/``right_knee``, ...) in the frames where the fitted model says the
            detector mixed them up (better exchanged by more than ``huber_delta_px``): checked
            at a third of the steps, when bundle adjustment starts and before the last bundle
            adjustment. The counts per camera are in ``result.metrics["trials"][name]
            ["left_right_relabelled"]``; the metrics compare with the keypoints as given.
        checkpoint_dir: with Adam, the state is saved there every ``checkpoint_every`` steps
            and a fit with the same data and settings resumes from it (the result equals an
            uninterrupted fit's).
        progress: show a progress bar. callback: ``callback(step, loss)`` after every step.
        dtype: float type of the variables (default float32 unless JAX runs in x64).

    Returns:
        a :class:`FitResult` with per-trial coordinates at the frames, the body parameters,
        the refined rig, the loss history and reprojection metrics.
    """
    if representation not in ("spline", "mlp"):
        raise InputError(f"representation: expected 'spline' or 'mlp', got {representation!r}")
    if solver not in ("adam", "lm"):
        raise InputError(f"solver: expected 'adam' or 'lm', got {solver!r}")
    if solver == "lm" and representation != "spline":
        raise InputError("solver='lm' fits the spline representation only (an MLP has too many weights); use solver='adam'")
    if steps < 1 or not 0 <= ba_start_fraction <= 1:
        raise InputError(f"steps must be >= 1 and ba_start_fraction in [0, 1], got {steps} and {ba_start_fraction}")
    dtype = dtype or jnp.result_type(float)
    caps = _check_inputs(model, captures, rig, marker_set)
    rig = jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype) if eqx.is_inexact_array(x) else x, rig)
    names = model.scale_param_names
    setup = _Setup(
        model=model,
        marker_set=marker_set,
        site_ids=tuple(int(i) for i in model.marker_site_ids(marker_set)),
        scale_prior=tuple(n != "overall" for n in names),
        delta_px=float(huber_delta_px),
        offset_weight=float(offset_weight),
        scale_weight=float(scale_weight),
        smooth_weight=float(smooth_weight),
        camera_weight=float(camera_weight) / sum(c.num_frames for c in caps),
        points=int(time_points_per_step),
    )
    trials = tuple(_Trial(jnp.asarray(c.keypoints, dtype), jnp.asarray(c.confidence, dtype), jnp.asarray(c.times, dtype)) for c in caps)
    key = jax.random.PRNGKey(seed)
    key, init_key = jax.random.split(key)
    v = _initial_variables(model, caps, rig, marker_set, representation, knots_per_second, mlp_width, mlp_depth, init_key, dtype)
    ba_start = int(round(steps * ba_start_fraction)) if bundle_adjust else steps
    pairs = mirror_pairs(model.marker_names(marker_set)) if relabel_left_right else np.zeros((0, 2), int)
    relabel = _Relabel(pairs, float(huber_delta_px), frozenset({steps // 3, ba_start if ba_start < steps else (2 * steps) // 3}))
    swapped = tuple(jnp.zeros(t.confidence.shape[:2] + (len(pairs),), bool) for t in trials)
    started = time.perf_counter()
    if solver == "adam":
        v, trials, swapped, history = _run_adam(
            v, setup, rig, trials, swapped, relabel, steps, lr, ba_lr, ba_start, ba_iterations, key, checkpoint_dir, checkpoint_every,
            progress, callback, _fingerprint(data=[(c.name, c.keypoints.shape, float(np.nansum(c.keypoints))) for c in caps],
                                             steps=steps, lr=lr, ba=bundle_adjust, ba_start=ba_start, ba_lr=ba_lr,
                                             seed=seed, rep=representation, setup=str(setup), pairs=pairs.tolist()))
    else:
        v, history = _run_lm(v, setup, rig, trials, steps, ba_start, progress, callback)
    ba_on = jnp.asarray(1.0 if bundle_adjust else 0.0, dtype)
    trials, swapped = _relabel_left_right(v, setup, rig, trials, ba_on, relabel.pairs, swapped, relabel.threshold_px)
    if bundle_adjust and ba_start < steps:
        v = _joint_bundle_adjustment(v, setup, rig, trials, ba_iterations, progress)
    elapsed = time.perf_counter() - started
    params = v.params(setup)
    refined = v.rig(rig, 1.0 if bundle_adjust else 0.0)
    results = []
    for traj, cap in zip(v.trajectories, caps):
        coords = np.asarray(traj(jnp.asarray(cap.times, dtype)), float)
        results.append(TrialResult(name=cap.name or f"trial{len(results) + 1}", times=cap.times, coords=coords, trajectory=traj, capture=cap))
    result = FitResult(
        model=model,
        marker_set=marker_set,
        trials=results,
        params=params,
        rig=refined,
        initial_rig=rig,
        loss_history=np.asarray(history, float),
        metrics={},
        settings=dict(representation=representation, solver=solver, steps=steps, lr=lr, bundle_adjust=bundle_adjust,
                      ba_start_fraction=ba_start_fraction, ba_lr=ba_lr, time_points_per_step=time_points_per_step,
                      seed=seed, seconds=elapsed),
    )
    result.metrics.update(fit_metrics(result))
    for trial, mask in zip(results, swapped):
        counts = np.asarray(mask).sum(axis=(1, 2))
        result.metrics["trials"][trial.name]["left_right_relabelled"] = {n: int(k) for n, k in zip(rig.names, counts)}
    return result


def _run_adam(v, setup, rig, trials, swapped, relabel, steps, lr, ba_lr, ba_start, ba_iterations, key, checkpoint_dir,
              checkpoint_every, progress, callback, meta):
    main, cams = _optimisers(ba_lr)
    vp = eqx.filter(v, eqx.is_inexact_array)
    opt_state = (main.init(vp), cams.init(v.camera))
    history = jnp.full((steps,), jnp.nan)
    start = 0
    folder = None if checkpoint_dir is None else Path(checkpoint_dir)
    if folder is not None:
        loaded = _load_checkpoint(folder, (vp, opt_state, history, key, jnp.asarray(0), trials, swapped), meta)
        if loaded is not None:
            vp, opt_state, history, key, start, trials, swapped = loaded
            v = eqx.combine(vp, v)
            start = int(start)
    bar = tqdm(total=steps, initial=start, desc="fit (adam)", disable=not progress, leave=False)
    dtype = v.log_scales.dtype
    losses_step = []
    for step in range(start, steps):
        lr_t = jnp.asarray(_learning_rate(lr, step, steps, ba_start), dtype)
        ba_on = jnp.asarray(1.0 if step >= ba_start else 0.0, dtype)
        if step in relabel.at_steps:
            trials, swapped = _relabel_left_right(v, setup, rig, trials, ba_on, relabel.pairs, swapped, relabel.threshold_px)
        if step == ba_start:
            v = _joint_bundle_adjustment(v, setup, rig, trials, ba_iterations, progress)
        ba_lr_t = jnp.asarray(ba_lr * LR_DECAY ** (max(step - ba_start, 0) / max(steps - ba_start, 1)), dtype)
        v, opt_state, loss, key = _adam_step(v, opt_state, setup, rig, trials, ba_on, lr_t, ba_lr_t, key)
        losses_step.append((step, loss))
        if callback is not None:
            callback(step, float(loss))
        if (step + 1) % 50 == 0 or step + 1 == steps:
            bar.set_postfix(loss=f"{float(loss):.4g}")
        bar.update(1)
        if folder is not None and ((step + 1) % checkpoint_every == 0 or step + 1 == steps):
            history = _flush(history, losses_step)
            losses_step = []
            state = (eqx.filter(v, eqx.is_inexact_array), opt_state, history, key, jnp.asarray(step + 1), trials, swapped)
            _save_checkpoint(folder, state, meta)
    bar.close()
    history = _flush(history, losses_step)
    return v, trials, swapped, np.asarray(history)


def _learning_rate(lr: float, step: int, steps: int, ba_start: int) -> float:
    """The paper's exponential 1000-fold decay over the steps; with bundle adjustment the decay
    restarts at a tenth of ``lr`` when the cameras are freed, so the trajectories can still
    follow the cameras as they move."""
    if step < ba_start < steps:
        return lr * (LR_DECAY * 10) ** (step / ba_start)
    if ba_start < steps:
        return 0.1 * lr * (LR_DECAY * 10) ** ((step - ba_start) / (steps - ba_start))
    return lr * LR_DECAY ** (step / steps)


def _flush(history, pending):
    if not pending:
        return history
    idx = np.array([s for s, _ in pending])
    return history.at[idx].set(jnp.stack([jnp.asarray(l, history.dtype) for _, l in pending]))


def _run_lm(v, setup, rig, trials, steps, ba_start, progress, callback):
    """Levenberg–Marquardt (optimistix) in at most two calls: ``ba_start`` iterations with the
    cameras held, then the rest with them free. Each call runs to convergence or its iteration
    count in one piece: the damping adapts over the iterations, and restarting it every few
    iterations (to show progress) left the solver stuck with too little damping."""
    bar = tqdm(total=steps, desc="fit (lm)", disable=not progress, leave=False)
    history = []
    dtype = v.log_scales.dtype
    for done, count, ba in ((0, min(ba_start, steps), 0.0), (ba_start, steps - ba_start, 1.0)):
        if count <= 0:
            continue
        ba_on = jnp.asarray(ba, dtype)
        v = _lm_solve_jit(v, setup, rig, trials, ba_on, count)
        loss = float(_objective(v, setup, rig, trials, ba_on))
        history.append(loss)
        if callback is not None:
            callback(done + count, loss)
        bar.set_postfix(loss=f"{loss:.4g}")
        bar.update(count)
    bar.close()
    return v, np.asarray(history)
