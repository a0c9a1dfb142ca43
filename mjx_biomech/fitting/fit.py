"""Fitting a scaled body model to multi-camera 2D keypoints: :func:`fit` and its input checks.

One objective (:mod:`~mjx_biomech.fitting.objective`), several scopes and two solvers:

- scope: one or several trials of one person share :class:`BodyParams` (bilevel); camera
  extrinsics are freed after ``ba_start_fraction`` of the steps and refined by a joint bundle
  adjustment (:mod:`~mjx_biomech.fitting.bundle_adjustment`), the first camera held and the
  second kept at its distance from it to fix the gauge (:func:`~mjx_biomech.fitting.variables.moved_rig`);
- detector errors: Huber residuals bound outliers, and left/right detections that the fitted
  model says were exchanged are swapped back (:mod:`~mjx_biomech.fitting.relabel`);
- solvers: optax AdamW with the paper's schedule on random time points, any trajectory
  (:mod:`~mjx_biomech.fitting.solvers.adam`, with :mod:`~mjx_biomech.fitting.checkpoints`), or
  Levenberg–Marquardt on every frame, spline trajectories (their control points' normal
  equations banded, the shared variables eliminated by the Schur complement:
  :mod:`~mjx_biomech.fitting.solvers.spline_lm`).

Each solver's step is compiled once per model, marker set, array shapes and settings, and the
data and learning rates enter as arguments, so fits of same-shaped captures reuse the compiled
code.

Progress. Library code prints nothing; every fit and solver takes ``progress``, a callable

    progress(stage: str, done: int, total: int, info: dict) -> None

(:data:`mjx_biomech.fitting.solvers.Progress`). A stage (``"adam"``, ``"lm"``, ``"bundle
adjustment"``, ``"population"``) starts with a call with ``done`` = 0 (or the step a resumed fit
continues from) and ``info`` = {}; then one call after each step or iteration with ``done`` the
count so far out of ``total`` and ``info["loss"]`` the objective: a float, or a 0-d JAX array
after an AdamW step (``float()`` on it waits for the device, so convert only what is shown).
Other keys of ``info`` may tell more (which trial) and are to be ignored where not known. A
stage may end before ``total`` (a solver that converged) and may run again (bundle adjustment
at its start and at the end); bundle adjustment runs inside the ``"adam"`` stage. Raising from
``progress`` stops the fit (with checkpoints, it resumes from the last one).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from mjx_biomech.analysis.plausibility import body_warnings
from mjx_biomech.analysis.results import FitResult, TrialResult, fit_metrics
from mjx_biomech.body.params import BodyParams
from mjx_biomech.capture.cameras import CameraRig
from mjx_biomech.capture.captures import Capture, mirror_pairs
from mjx_biomech.errors import InputError
from mjx_biomech.fitting import anthropometry, checkpoints, relabel
from mjx_biomech.fitting.bundle_adjustment import joint_bundle_adjustment, spline_fit
from mjx_biomech.fitting.solvers import Progress, adam
from mjx_biomech.fitting.uncertainty import fit_uncertainty
from mjx_biomech.fitting.variables import FitSetup, TrialArrays, initial_variables

# The default length of a fit: AdamW steps, or Levenberg–Marquardt iterations per solve (each
# solve stops once converged: 10-40 iterations on the benchmark captures).
ADAM_STEPS = 2000
LM_ITERATIONS = 100

# Where ``undetermined="tie"`` puts a scale group the data do not determine: the group whose
# scale it then shares (its neighbour in the body, or its other side).
TIE_TO = {
    "head": "torso", "torso": "pelvis", "pelvis": "torso",
    "thigh_r": "thigh_l", "thigh_l": "thigh_r", "leg_r": "leg_l", "leg_l": "leg_r", "arm_r": "arm_l", "arm_l": "arm_r",
}  # fmt: skip


def check_captures(model, captures: Capture | Sequence[Capture], rig: CameraRig, marker_set: str) -> list[Capture]:
    """``captures`` (one or several) as a list, each in ``rig``'s camera order.

    Raises:
        InputError: naming the capture: not a :class:`Capture`, keypoints other than marker set
            ``marker_set``'s (in its order), fewer than 2 frames, or a camera ``rig`` lacks.
    """
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


def _check_settings(representation: str, solver: str, steps: int, ba_start_fraction: float, undetermined: str,
                    **positive: float) -> None:
    for name, value in positive.items():
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise InputError(f"{name}: expected a finite number > 0, got {value!r}")
    if undetermined not in ("keep", "tie", "fix"):
        raise InputError(f"undetermined: expected 'keep', 'tie' or 'fix', got {undetermined!r}")
    if representation not in ("spline", "mlp"):
        raise InputError(f"representation: expected 'spline' or 'mlp', got {representation!r}")
    if solver not in ("adam", "lm"):
        raise InputError(f"solver: expected 'adam' or 'lm', got {solver!r}")
    if solver == "lm" and representation != "spline":
        raise InputError("solver='lm' fits the spline representation only (an MLP has too many weights); use solver='adam'")
    if steps < 1 or not 0 <= ba_start_fraction <= 1:
        raise InputError(f"steps must be >= 1 and ba_start_fraction in [0, 1], got {steps} and {ba_start_fraction}")


def fit(
    model,
    captures: Capture | Sequence[Capture],
    rig: CameraRig,
    marker_set: str,
    representation: str = "spline",
    solver: str | None = None,
    steps: int | None = None,
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
    body_prior_weight: float = 100.0,
    tie_left_right: bool = True,
    smooth_weight: float = 0.0,
    camera_weight: float = 1.0,
    relabel_left_right: bool = True,
    reject_view_px: float = 50.0,
    seed: int = 0,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 500,
    progress: Progress | None = None,
    dtype=None,
    uncertainty: bool = True,
    undetermined: str = "keep",
) -> FitResult:
    """Fit trajectories, body parameters and (optionally) camera extrinsics to 2D keypoints.

    Args:
        model: a ``BiomechModel`` with ``marker_set``.
        captures: one :class:`Capture` or several trials of the same person (they share
            :class:`BodyParams`); keypoints must be the marker set's, in its order.
        rig: the calibration; every capture must name exactly its cameras.
        representation: ``"spline"`` (cubic B-spline, ``knots_per_second``) or ``"mlp"``
            (the paper's implicit MLP, ``mlp_width`` × ``mlp_depth``).
        solver: None (default): ``"lm"`` for a spline, ``"adam"`` for an MLP or when
            ``checkpoint_dir`` is given. ``"adam"`` (AdamW, β1 = 0.8, weight decay 1e-5, learning rate ``lr`` decaying
            exponentially 1000-fold over ``steps``, ``time_points_per_step`` random frames per
            trial per step) or ``"lm"`` (Levenberg–Marquardt on every frame; spline only: at most
            ``steps`` iterations per solve, each solve stopping once converged, see
            ``bundle_adjust``). On the benchmark capture LM reaches AdamW's reprojection error in
            an eighth of its time (``benchmarks/fit.py``).
        steps: AdamW steps (default :data:`ADAM_STEPS`) or LM iterations per solve at most
            (default :data:`LM_ITERATIONS`).
        bundle_adjust: free camera extrinsics for the last ``1 − ba_start_fraction`` of the
            (AdamW) steps, the gauge fixed by the first camera (held) and the distance from it to the
            second (kept). At that point a Levenberg–Marquardt bundle adjustment refines every
            frame's pose, the body parameters and the cameras together (``ba_iterations``
            iterations, :mod:`mjx_biomech.fitting.bundle_adjustment`); the steps after it refine
            the trajectories with the cameras moving at Adam learning rate ``ba_lr`` (decaying
            1000-fold over that phase), and a last bundle adjustment ends the fit. With ``solver="lm"``
            the fit ends with a solve that moves the cameras with everything else (the spline's
            control points, body and cameras together: the bundle adjustment) after those that
            hold them; ``ba_start_fraction``, ``ba_lr`` and ``ba_iterations`` are AdamW's.
        huber_delta_px: Huber threshold (px). offset_weight: prior weight per (1 cm)² of marker
            offset. scale_weight: prior weight on log scales of groups other than ``overall``.
            body_prior_weight: weight of the anthropometric priors
            (:mod:`~mjx_biomech.fitting.anthropometry`), per squared standard deviation beyond
            the plausible band (a group's scale more than 2 SD from the population's
            proportions; left/right groups more than 3 % apart, in units of 2 %); 0 turns them
            off. The groups other than ``overall`` stay within 0.6–1.6 regardless.
            tie_left_right: tie left/right groups softly (False frees them).
            smooth_weight: weight of squared accelerations (Adam only). camera_weight: prior
            weight per (0.01 rad)² and (1 cm)² of camera movement in bundle adjustment, divided
            by the number of frames (the reprojection term averages over frames, so this is
            the weight against the sum over frames: a longer capture outweighs it more).
        relabel_left_right: exchange a camera's left and right detections of a mirror pair
            (``left_knee``/``right_knee``, ...) in the frames where the fitted model says the
            detector mixed them up (better exchanged by more than ``huber_delta_px``): checked
            at a third of the steps, when bundle adjustment starts and before the last bundle
            adjustment (Levenberg–Marquardt: after each of its solves but the last, so every
            exchange is used by a solve). The counts per camera are in
            ``result.metrics["trials"][name]["left_right_relabelled"]``; the metrics score the
            detections as relabelled (:func:`~mjx_biomech.analysis.results.fit_metrics`).
        reject_view_px: at the same points, a camera's detections in a frame are dropped when
            their median error exceeds this (px) and 5 times the trial's median over cameras
            and frames (a detector following someone else); the dropped frames per camera are in
            ``result.metrics["trials"][name]["rejected_frames"]`` (the scores still count them).
            0 keeps every detection.
        checkpoint_dir: with Adam, the state is saved there every ``checkpoint_every`` steps
            and a fit with the same data and settings resumes from it (the result equals an
            uninterrupted fit's).
        progress: ``progress(stage, done, total, info)`` as the fit goes (see the module
            docstring); None reports nothing.
        dtype: float type of the variables (default float32 unless JAX runs in x64).
        uncertainty: compute the standard errors once the fit ends
            (:mod:`~mjx_biomech.fitting.uncertainty`: joint angles per frame, scales, offsets
            and, with bundle adjustment, the cameras).
        undetermined: what to do with scale groups the data do not determine (σ above 2 %):
            ``"keep"`` reports them only; ``"tie"`` fits again with each such group sharing the
            scale of its neighbour (:data:`TIE_TO`: head to torso, one side to the other, ...)
            and ``"fix"`` with each held at its prior (scale 1 relative to ``overall``): the
            model's groups are changed (``BiomechModel.with_scale_groups``), so the second fit
            costs as much as the first; the result is given in the model's own groups (a fixed
            group 1 with σ 0, a tied one its neighbour's value and σ), the choice under
            ``settings["undetermined"]``. ``overall`` and groups without a neighbour are kept.

    Returns:
        a :class:`FitResult` with per-trial coordinates at the frames and their standard errors,
        the body parameters, the refined rig, the loss history, reprojection metrics, the
        standard errors (``result.uncertainty``) and, under ``metrics["warnings"]``, sentences
        about an implausible body (:func:`~mjx_biomech.analysis.plausibility.body_warnings`).
    """
    if solver is None:
        solver = "adam" if representation == "mlp" or checkpoint_dir is not None else "lm"
    if steps is None:
        steps = ADAM_STEPS if solver == "adam" else LM_ITERATIONS
    _check_settings(representation, solver, steps, ba_start_fraction, undetermined,
                    huber_delta_px=huber_delta_px, knots_per_second=knots_per_second)
    if undetermined != "keep":
        # Every setting as given (the parameters are all that is bound so far), for both fits.
        kwargs = {k: val for k, val in locals().items() if k not in ("model", "captures", "rig", "marker_set", "undetermined")}
        kwargs["uncertainty"] = True
        first = fit(model, captures, rig, marker_set, **kwargs)
        return _refit_undetermined(first, undetermined, lambda m: fit(m, captures, rig, marker_set, **kwargs))
    dtype = dtype or jnp.result_type(float)
    caps = check_captures(model, captures, rig, marker_set)
    rig = jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype) if eqx.is_inexact_array(x) else x, rig)
    setup = FitSetup(
        model=model,
        marker_set=marker_set,
        site_ids=tuple(int(i) for i in model.marker_site_ids(marker_set)),
        scale_prior=tuple(n != "overall" for n in model.scale_param_names),
        delta_px=float(huber_delta_px),
        offset_weight=float(offset_weight),
        scale_weight=float(scale_weight),
        smooth_weight=float(smooth_weight),
        camera_weight=float(camera_weight) / sum(c.num_frames for c in caps),
        points=int(time_points_per_step),
        scale_sd=tuple(float(x) for x in np.nan_to_num(anthropometry.group_sd(model), nan=0.0)),
        mirror=tuple(map(tuple, anthropometry.mirror_groups(model).tolist())) if tie_left_right else (),
        body_weight=float(body_prior_weight),
        reject_px=float(reject_view_px),
    )
    trials = tuple(TrialArrays.from_capture(c, dtype) for c in caps)
    key = jax.random.PRNGKey(seed)
    key, init_key = jax.random.split(key)
    v = initial_variables(model, caps, rig, marker_set, representation, knots_per_second, mlp_width, mlp_depth, init_key, dtype)
    ba_start = round(steps * ba_start_fraction) if bundle_adjust else steps
    pairs = mirror_pairs(model.marker_names(marker_set)) if relabel_left_right else np.zeros((0, 2), int)
    at_steps = frozenset({steps // 3, ba_start if ba_start < steps else (2 * steps) // 3})
    relabelling = relabel.Relabel(pairs, float(huber_delta_px), at_steps)
    swapped = tuple(jnp.zeros(t.confidence.shape[:2] + (len(pairs),), bool) for t in trials)
    started = time.perf_counter()
    if solver == "adam":
        meta = checkpoints.fingerprint(
            data=[(c.name, c.keypoints.shape, float(np.nansum(c.keypoints))) for c in caps], steps=steps, lr=lr, ba=bundle_adjust,
            ba_start=ba_start, ba_lr=ba_lr, seed=seed, rep=representation, setup=str(setup), pairs=pairs.tolist(),
        )
        v, trials, swapped, history = adam.run(
            v, setup, rig, trials, swapped, relabelling, steps=steps, lr=lr, ba_lr=ba_lr, ba_start=ba_start,
            ba_iterations=ba_iterations, key=key, checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every, meta=meta,
            progress=progress,
        )
        ba_on = jnp.asarray(1.0 if bundle_adjust else 0.0, dtype)
        trials, swapped = relabel.relabel_left_right(v, setup, rig, trials, ba_on, pairs, swapped, relabelling.threshold_px)
        if bundle_adjust and ba_start < steps:
            v = joint_bundle_adjustment(v, setup, rig, trials, ba_iterations, progress)
    else:
        v, trials, swapped, history = _levenberg_marquardt(v, setup, rig, trials, swapped, relabelling, steps, bundle_adjust,
                                                           progress)
    elapsed = time.perf_counter() - started
    sigma = fit_uncertainty(v, setup, rig, trials, free_cameras=bundle_adjust) if uncertainty else None
    params = v.params(setup)
    refined = v.rig(rig, 1.0 if bundle_adjust else 0.0)
    results = tuple(
        TrialResult(name=cap.name or f"trial{i + 1}", times=cap.times,
                    coords=np.asarray(traj(jnp.asarray(cap.times, dtype)), float), trajectory=traj, capture=cap,
                    labelled=relabel.exchanged_capture(cap, np.asarray(mask), pairs),
                    coords_std=None if sigma is None else sigma.coordinate_std[i])
        for i, (traj, cap, mask) in enumerate(zip(v.trajectories, caps, swapped))
    )
    relabelled = {t.name: {n: int(k) for n, k in zip(rig.names, np.asarray(mask).sum(axis=(1, 2)))}
                  for t, mask in zip(results, swapped)}
    # Camera-frames with detections in the capture and none left in the fit: rejected.
    rejected = {t.name: {n: np.flatnonzero(r).tolist() for n, r in zip(rig.names, (cap.confidence > 0).any(-1)
                                                                         & ~(np.asarray(arrays.confidence) > 0).any(-1))}
                for t, cap, arrays in zip(results, caps, trials)}
    history = np.asarray(history, float)
    result = FitResult(
        model=model,
        marker_set=marker_set,
        trials=results,
        params=params,
        rig=refined,
        initial_rig=rig,
        loss_history=history,
        metrics=fit_metrics(model, marker_set, params, refined, results, history, relabelled,
                            original_rig=rig if bundle_adjust else None, rejected=rejected),
        settings=dict(representation=representation, solver=solver, steps=steps, lr=lr, bundle_adjust=bundle_adjust,
                      ba_start_fraction=ba_start_fraction, ba_lr=ba_lr, time_points_per_step=time_points_per_step,
                      body_prior_weight=body_prior_weight, tie_left_right=tie_left_right, reject_view_px=reject_view_px,
                      seed=seed, seconds=elapsed, uncertainty_seconds=None if sigma is None else sigma.seconds),
        uncertainty=sigma,
    )
    return dataclasses.replace(result, metrics={**result.metrics, "warnings": body_warnings(result)})


def _refit_undetermined(first: FitResult, mode: str, refit) -> FitResult:
    """``first`` fitted again (``refit(model)``) with its undetermined scale groups tied to their
    neighbours or fixed at the prior (``mode``), the result given in ``first.model``'s groups."""
    model = first.model
    groups = {g.name: {"name": g.name, "bodies": list(g.bodies), "per_axis": g.per_axis} for g in model.scale_groups}
    flagged = list(dict.fromkeys(n.partition(".")[0] for n in first.uncertainty.undetermined_scales))
    changed: dict[str, str | None] = {}  # group -> the group it joined, None: fixed at the prior
    for name in flagged:
        if name == "overall" or name not in groups:
            continue
        if mode == "fix":
            changed[name] = None
            del groups[name]
            continue
        target = TIE_TO.get(name)
        while target in changed:
            target = changed[target]
        if target is None or target == name or target not in groups:
            continue
        groups[target]["bodies"] += groups.pop(name)["bodies"]
        changed[name] = target
    settings = {**first.settings, "undetermined": {"mode": mode, "groups": {g: t or "prior" for g, t in changed.items()},
                                                   "first_fit_scale_sigma": dict(first.uncertainty.scale_sigma)}}
    if not changed:
        return dataclasses.replace(first, settings=settings)
    second = refit(model.with_scale_groups(list(groups.values())))
    values = dict(zip(second.model.scale_param_names, np.asarray(second.params.scales, float)))
    sigmas = dict(second.uncertainty.scale_sigma)

    def source(name):
        base, dot, axis = name.partition(".")
        target = changed.get(base, base)
        if target is None:
            return None
        return next((n for n in (target + dot + axis, target) if n in values), None)

    scales, scale_sigma = [], {}
    for name in model.scale_param_names:
        src = source(name)
        scales.append(1.0 if src is None else values[src])
        scale_sigma[name] = 0.0 if src is None else sigmas[src]
    params = BodyParams(jnp.asarray(scales, jnp.asarray(second.params.scales).dtype), second.params.offsets)
    sigma = dataclasses.replace(second.uncertainty, scale_sigma=scale_sigma)
    result = dataclasses.replace(second, model=model, params=params, uncertainty=sigma, settings=settings)
    return dataclasses.replace(result, metrics={**result.metrics, "warnings": body_warnings(result)})


def _levenberg_marquardt(v, setup, rig, trials, swapped, relabelling, steps: int, bundle_adjust: bool,
                         progress: Progress | None):
    """The LM fit: solves of at most ``steps`` iterations each: one with the cameras held, then,
    with ``bundle_adjust``, one with them free (the bundle adjustment: every pose on its spline,
    the body and the cameras together; per-frame poses add nothing a spline's control points
    cannot follow), these two only to 1e-3 relative progress; then the left/right relabelling and
    view rejection (at the fitted cameras: with the given ones off by a few degrees, the fit
    would blame the detector for the camera) and a last solve to 1e-6 (float64; 7.6e-6 in float32). One ``"lm"`` progress stage
    counts the iterations of every solve (out of ``steps`` per solve; a solve that converges
    early skips the rest of its share).

    Returns ``(v, trials, swapped, history)``."""
    dtype = v.log_scales.dtype
    # The last solve stops below 1e-6 relative progress, or below the rounding of the objective
    # itself in float32: a sum of ~1e5 residuals rounds at some 1e-6 of its value there, and
    # steps of that size only chase the rounding.
    last_rtol = max(1e-6, 64 * float(jnp.finfo(dtype).eps))
    solves = [(False, 1e-3)] + ([(True, 1e-3)] if bundle_adjust else []) + [(bundle_adjust, last_rtol)]
    total = steps * len(solves)
    done = 0

    def report(stage, k, of, info):
        # Each solve counts from 0; the fit's one "lm" stage counts on from the solves before.
        if stage != "lm":
            progress(stage, k, of, info)
        elif k > 0:
            progress("lm", done + k, total, info)

    if progress is not None:
        progress("lm", 0, total, {})
    history = []
    for i, (free, rtol) in enumerate(solves):
        if i == len(solves) - 1:
            ba_on = jnp.asarray(1.0 if free else 0.0, dtype)
            trials, swapped = relabel.relabel_left_right(v, setup, rig, trials, ba_on, relabelling.pairs, swapped,
                                                         relabelling.threshold_px)
        v, h = spline_fit(v, setup, rig, trials, steps, free, None if progress is None else report, rtol=rtol)
        history.extend(h[1:] if len(h) > 1 else h)
        done += steps
    return v, trials, swapped, history
