"""Scaling a body model to optical markers: OpenSim's ScaleTool, solved as AddBiomechanics does.

:func:`fit_markers` finds one person's segment scales and marker offsets (:class:`BodyParams`)
from a static trial and any motion trials at once (bilevel): the shared variables are the
model's scale parameters (log scales; one per scale group, per axis where the group says so)
and the offsets of the markers that are not ``fixed``; every frame has its own pose.

The objective. Each frame's term is OpenSim's IK objective
(:func:`~mjx_biomech.fitting.marker_objective.frame_residuals`, so a frame's best pose is OpenSim's IK pose)
relative to the trial's mean task weight, in units of ``marker_sigma_m``. A trial's frames share
its systematic errors (soft-tissue motion, marker placement), which more frames do not average
away, so each trial's frames are averaged: every trial counts once. Gaussian priors pull the
offsets towards 0 and the log scales towards the starting scale (``scale_sigma``). Each marker's
offset prior is ``offset_sigma_m`` divided by the square root of its relative task weight in the
static trial (the first motion trial without one): as OpenSim's MarkerPlacer poses the static
trial by its task weights before it moves the markers, heavily weighted markers (anatomical
landmarks) keep close to their placement and define the pose, and lightly weighted ones
(clusters) move freely to the data.

The solver is the Schur-complement Levenberg–Marquardt of bundle adjustment
(:mod:`~mjx_biomech.fitting.solvers.schur_lm`): each frame's pose is eliminated, so memory and
time grow linearly with the frames. Poses stay within clamped ranges through the logistic map of
:class:`~mjx_biomech.fitting.trajectories.CoordinateMap`; locked and held coordinates stay put.

How it runs:

1. A static trial is averaged over its frames (as OpenSim's MarkerPlacer does) into one frame; a
   motion trial contributes ``scale_frames`` evenly spaced frames.
2. Start: one overall scale from the spread of the observed markers about their centroid against
   the model's at its neutral pose, then IK of every trial with that scale.
3. The Schur LM on every chosen frame.
4. IK (:class:`~mjx_biomech.fitting.ik.MarkerIK`, exact ranges) of the static trial's frames and
   of every motion trial with the scaled model.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Collection, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mjx_biomech.body.params import BodyParams
from mjx_biomech.capture.marker_trials import MarkerTrial
from mjx_biomech.errors import InputError
from mjx_biomech.fitting.ik import IKResult, marker_ik
from mjx_biomech.fitting.marker_objective import CoordinateTarget, Frame, Weights, frame_jacobians, frame_residuals
from mjx_biomech.fitting.solvers import Progress
from mjx_biomech.fitting.solvers.schur_lm import covariance_of_shared, schur_levenberg_marquardt
from mjx_biomech.fitting.trajectories import CoordinateMap

__all__ = [
    "OFFSET_SIGMA_LIMIT_M", "SCALE_SIGMA_LIMIT", "MarkerFitResult", "averaged_trial", "fit_markers", "ik_of_trials",
    "marker_solver", "static_tasks",
]

STAGE = "scale"
# Standard errors above which a parameter counts as not determined by the data.
SCALE_SIGMA_LIMIT = 0.02  # relative (2 %)
OFFSET_SIGMA_LIMIT_M = 0.01
# The Schur LM stops when a step lowers the objective by less than this fraction: scales then
# move by well under 0.1 %.
_RTOL = 1e-6


@dataclasses.dataclass(frozen=True)
class MarkerFitResult:
    """A person scaled to markers.

    Attributes:
        model: the model fitted (its ``scale_param_names`` order ``params.scales``).
        marker_set: the model's marker set used (None: its site names).
        params: the person's :class:`BodyParams` (NumPy float64).
        fitted_scales: the scale parameters the fit moved (an ``overall`` that every other group
            covers stays 1).
        marker_names: (M,) the marker set's markers; ``offsets`` (M, 3) metres in their bodies'
            frames; ``fixed_markers`` the ones held at the model's placement; ``fitted_markers``
            the ones whose offsets were fitted (tracked, observed and not fixed).
        static: IK of the static trial's frames with the scaled model (None without one).
        trials: IK of every motion trial with the scaled model.
        initial_scale: the overall scale the fit started from (marker spread).
        history: (k,) the objective after each accepted Levenberg–Marquardt step.
        frames_used: trial name -> frames that entered the scaling.
        scale_seconds: the scaling (initial IK and Schur LM); ``seconds``: everything.
        scale_sigma: fitted scale parameter -> standard error of its logarithm (≈ relative error),
            and ``offset_sigma_m`` (M, 3) each fitted offset's (NaN for markers not fitted): the
            Laplace approximation at the optimum under the fit's own noise model (``marker_sigma_m``
            per trial, the priors), the poses marginalised by the Schur complement
            (:func:`~mjx_biomech.fitting.solvers.schur_lm.shared_covariance`). Empty / None when
            the scales were given, not fitted.
    """

    model: object
    marker_set: str | None
    params: BodyParams
    fitted_scales: tuple[str, ...]
    marker_names: tuple[str, ...]
    offsets: np.ndarray
    fixed_markers: tuple[str, ...]
    fitted_markers: tuple[str, ...]
    static: IKResult | None
    trials: tuple[IKResult, ...]
    initial_scale: float
    history: np.ndarray
    frames_used: Mapping[str, int]
    scale_seconds: float
    seconds: float
    scale_sigma: Mapping[str, float] = dataclasses.field(default_factory=dict)
    offset_sigma_m: np.ndarray | None = None

    @property
    def undetermined_scales(self) -> tuple[str, ...]:
        """Fitted scales whose standard error exceeds :data:`SCALE_SIGMA_LIMIT` (relative): the
        data do not determine them (tie them to a neighbour or hold them at the prior)."""
        return tuple(n for n, s in self.scale_sigma.items() if not s <= SCALE_SIGMA_LIMIT)

    @property
    def undetermined_markers(self) -> tuple[str, ...]:
        """Fitted markers with an offset component whose standard error exceeds
        :data:`OFFSET_SIGMA_LIMIT_M`."""
        if self.offset_sigma_m is None:
            return ()
        return tuple(n for n, s in zip(self.marker_names, self.offset_sigma_m)
                     if n in self.fitted_markers and not np.all(s <= OFFSET_SIGMA_LIMIT_M))

    @property
    def scales(self) -> dict[str, float]:
        """Scale parameter name -> value."""
        return dict(zip(self.model.scale_param_names, map(float, np.asarray(self.params.scales))))

    @property
    def body_scales(self) -> dict[str, np.ndarray]:
        """Body name -> its (3,) scale vector (every scale group it belongs to, multiplied)."""
        with jax.enable_x64(True):
            scales = np.asarray(self.model.body_scales(jnp.asarray(self.params.scales, jnp.float64)))
        return {name: scales[b] for b, name in enumerate(self.model.body_names) if b > 0}


@dataclasses.dataclass(frozen=True)
class _ScaleProblem:
    """What the residuals need that is not an array: hashable, so the solver's steps compile once
    per problem. ``p`` stacks the free log scales (``free_scales``, indices into the model's scale
    parameters) and the offsets (metres) of the sites ``offset_sites``."""

    model: object
    site_ids: tuple[int, ...]
    cmap: CoordinateMap
    log_scales: tuple[float, ...]
    free_scales: tuple[int, ...]
    scale_prior: tuple[bool, ...]
    offset_sites: tuple[int, ...]
    offset_sigmas_m: tuple[float, ...]
    scale_sigma: float

    def params(self, p) -> BodyParams:
        k = len(self.free_scales)
        logs = jnp.asarray(self.log_scales, p.dtype).at[np.asarray(self.free_scales, int)].set(p[:k])
        offsets = jnp.zeros((len(self.model.site_names), 3), p.dtype)
        offsets = offsets.at[np.asarray(self.offset_sites, int)].set(p[k:].reshape(-1, 3))
        return BodyParams(jnp.exp(logs), offsets)

    def coords(self, u) -> jax.Array:
        return self.cmap.to_coords(u[None], jnp.zeros(1, u.dtype))[0]


def _residual(u, p, frame, problem: _ScaleProblem):
    data, weights, factor = frame
    r = frame_residuals(problem.model, np.asarray(problem.site_ids), problem.coords(u), problem.params(p), data, weights)
    return factor * r


def _linearise(u, p, frame, problem: _ScaleProblem):
    """:func:`_residual` and its Jacobians: the poses' and the offsets' in closed form
    (:func:`~mjx_biomech.fitting.marker_objective.frame_jacobians`), the log scales' by forward
    differentiation (a few parameters against the pose's tens and the offsets' hundred)."""
    data, weights, factor = frame
    site_ids = np.asarray(problem.site_ids)
    k = len(problem.free_scales)

    def coords_of(z):
        c = problem.coords(z)
        return c, c

    dcoords, coords = jax.jacfwd(coords_of, has_aux=True)(u)
    r, J_coords, J_offsets = frame_jacobians(problem.model, site_ids, coords, problem.params(p), data, weights,
                                             problem.offset_sites)

    def of_logs(logs):
        return frame_residuals(problem.model, site_ids, coords, problem.params(jnp.concatenate([logs, p[k:]])), data,
                               weights)

    J_scales = jax.jacfwd(of_logs)(p[:k])
    return factor * r, factor * (J_coords @ dcoords), factor * jnp.concatenate([J_scales, J_offsets], axis=1)


def _prior(p, problem: _ScaleProblem):
    k = len(problem.free_scales)
    start = jnp.asarray(problem.log_scales, p.dtype)[np.asarray(problem.free_scales, int)]
    scales = jnp.where(np.asarray(problem.scale_prior, bool), (p[:k] - start) / problem.scale_sigma, 0.0)
    offsets = p[k:].reshape(-1, 3) / jnp.asarray(problem.offset_sigmas_m, p.dtype)[:, None]
    return jnp.concatenate([scales, offsets.ravel()])


def averaged_trial(trial: MarkerTrial) -> MarkerTrial:
    """The trial as one frame at its middle time: each marker's mean over the frames that see it."""
    positions = trial.positions
    seen = np.isfinite(positions[..., 0])
    total = np.where(seen[..., None], positions, 0.0).sum(axis=0)
    count = seen.sum(axis=0)
    mean = np.where(count[:, None] > 0, total / np.maximum(count, 1)[:, None], np.nan)
    return dataclasses.replace(trial, times=trial.times[len(trial.times) // 2 :][:1], positions=mean[None])


def _spread(points: np.ndarray) -> float:
    """Root-mean-square distance (m) of points (N, 3) from their centroid."""
    return float(np.sqrt(np.mean(np.sum((points - points.mean(axis=0)) ** 2, axis=1))))


def _overall_guess(model, marker_set, problems) -> float:
    """The isotropic scale that gives the model's markers at its neutral pose the spread of the
    tracked markers in the first trial's frame that sees most of them."""
    tracked = np.any([p.weights.markers > 0 for p in problems], axis=0)
    targets = problems[0].frames.targets
    targets = targets[np.argmax((np.all(np.isfinite(targets), axis=-1) & tracked).sum(axis=1))]
    seen = tracked & np.all(np.isfinite(targets), axis=-1)
    if seen.sum() < 3:
        raise InputError(f"the trials observe {int(seen.sum())} tracked marker(s) of {model.source} in their best "
                         "frame; scaling needs at least 3")
    with jax.enable_x64(True):
        # Compiled once: op by op, every primitive of the model would be compiled apart.
        markers = jax.jit(model.markers, static_argnums=2)
        neutral = np.asarray(markers(jnp.asarray(model.neutral_coordinates()), model.default_params(jnp.float64),
                                     marker_set))
    return _spread(targets[seen]) / _spread(neutral[seen])


def _scale_layout(model, guess: float) -> tuple[tuple[float, ...], tuple[int, ...], tuple[bool, ...]]:
    """Starting log scales (P,), the free ones and which of those the prior pulls.

    An ``overall`` parameter whose bodies every other group covers adds nothing but a redundant
    direction: it stays 1 and the other groups start at ``guess``. Otherwise ``overall`` starts
    at ``guess``, without a prior, and the groups at 1, pulled towards it.
    """
    names = model.scale_param_names
    covered = {b for g in model.scale_groups if g.name != "overall" for b in g.bodies}
    overall = next((g for g in model.scale_groups if g.name == "overall"), None)
    redundant = overall is None or set(overall.bodies) <= covered
    logs, free, prior = [], [], []
    for i, name in enumerate(names):
        is_overall = name == "overall" or name.startswith("overall.")
        if is_overall and redundant:
            logs.append(0.0)
            continue
        logs.append(float(np.log(guess)) if (is_overall or redundant) else 0.0)
        free.append(i)
        prior.append(not is_overall)
    return tuple(logs), tuple(free), tuple(prior)


def marker_solver(model, marker_set: str | None, fixed_markers: Collection[str]):
    """The IK solver of ``model``'s ``marker_set`` (:func:`~mjx_biomech.fitting.ik.marker_ik`),
    once every fixed marker is known to be one of its markers (else :class:`InputError`)."""
    solver = marker_ik(model, marker_set)
    unknown = sorted(set(fixed_markers) - set(solver.marker_names))
    if unknown:
        raise InputError(f"fixed_markers: {unknown} are not markers of {model.source}"
                         + (f" (marker set {marker_set!r})" if marker_set else ""))
    return solver


def static_tasks(marker_weights, coordinate_targets, static_marker_weights, static_coordinate_targets):
    """The static trial's marker weights and coordinate tasks: its own where given, else the
    motion trials'."""
    return (marker_weights if static_marker_weights is None else static_marker_weights,
            coordinate_targets if static_coordinate_targets is None else static_coordinate_targets)


def ik_of_trials(solver, params: BodyParams, static: MarkerTrial | None, trials: Sequence[MarkerTrial],
                 static_tasks: tuple, motion_tasks: tuple, accuracy: float, progress: Progress | None):
    """IK of the static trial's frames (None without one) and of every motion trial with the
    person's ``params``; ``*_tasks``: (marker weights, coordinate targets)."""
    static_ik = (solver.solve(static, params, *static_tasks, accuracy=accuracy, progress=progress)
                 if static is not None else None)
    results = tuple(solver.solve(t, params, *motion_tasks, accuracy=accuracy, progress=progress) for t in trials)
    return static_ik, results


def _subsample(T: int, most: int) -> np.ndarray:
    return np.unique(np.round(np.linspace(0, T - 1, min(T, most))).astype(int))


def _starting_poses(solver, scaling, problems, params0: BodyParams, marker_sigma_m, accuracy, progress):
    """IK of every scaling trial with ``params0``: the chosen frames' poses (F, C) and their data for
    the Schur LM (a :class:`Frame`, the :class:`Weights` and the residual factor of each frame)."""
    poses, data = [], []
    for (trial, weights, targets, picked), problem in zip(scaling, problems):
        ik = solver.solve(trial, params0, weights, targets, accuracy=accuracy, progress=progress)
        poses.append(ik.coordinates[picked])
        w = problem.weights
        observed = np.all(np.isfinite(problem.frames.targets[picked]), axis=-1)
        total = np.sum(np.where(observed, w.markers, 0.0), axis=1)
        # A trial's frames share its systematic errors (soft tissue, marker placement): its frames
        # are averaged, so each trial counts once however many frames it has.
        factor = np.sqrt(total / np.mean(w.markers[w.markers > 0]) / len(picked)) / marker_sigma_m
        shared = Weights(*(np.broadcast_to(a, (len(picked),) + a.shape) for a in w))
        data.append((Frame(*(a[picked] for a in problem.frames)), shared, factor))
    return np.concatenate(poses), jax.tree.map(lambda *a: np.concatenate(a), *data)


def _scale_problem(model, solver, problems, data, layout, fixed_markers, offset_sigma_m, scale_sigma):
    """The shared variables and priors (a :class:`_ScaleProblem`): the scale ``layout`` of
    :func:`_scale_layout`, and an offset for every marker tracked and observed in some frame of
    ``data`` and not fixed (their names, the second value returned)."""
    names = solver.marker_names
    site_ids = np.asarray(solver.site_ids)
    frames, weights, _ = data
    seen = np.any(np.all(np.isfinite(frames.targets), axis=-1) & (weights.markers > 0), axis=0)
    fitted = [k for k, n in enumerate(names) if seen[k] and n not in fixed_markers]
    # As OpenSim's MarkerPlacer poses the static trial by its task weights before it moves the
    # markers, a marker weighted above the average (an anatomical landmark) keeps closer to its
    # placement and one weighted below (a cluster marker) moves more freely.
    leading = problems[0].weights.markers
    trust = np.maximum(leading / np.mean(leading[leading > 0]), 1e-6)
    lower, upper = model.coordinate_ranges.T
    C = model.num_coordinates
    cmap = CoordinateMap(lower=tuple(map(float, lower)), upper=tuple(map(float, upper)),
                         bounded=tuple(map(bool, np.isfinite(problems[0].weights.lower))), intercept=(0.0,) * C,
                         slope=(0.0,) * C, t0=0.0, active=tuple(map(int, np.flatnonzero(problems[0].weights.moving))),
                         fixed=tuple(map(float, model.neutral_coordinates())))
    log_scales, free, prior = layout
    problem = _ScaleProblem(model, tuple(map(int, site_ids)), cmap, log_scales, free, prior,
                            tuple(int(site_ids[k]) for k in fitted),
                            tuple(float(offset_sigma_m / np.sqrt(trust[k])) for k in fitted), float(scale_sigma))
    return problem, tuple(names[k] for k in fitted)


def fit_markers(
    model,
    trials: MarkerTrial | Sequence[MarkerTrial] = (),
    *,
    static: MarkerTrial | None = None,
    marker_set: str | None = None,
    marker_weights: Mapping[str, float] | None = None,
    coordinate_targets: Sequence[CoordinateTarget] = (),
    static_marker_weights: Mapping[str, float] | None = None,
    static_coordinate_targets: Sequence[CoordinateTarget] | None = None,
    fixed_markers: Collection[str] = (),
    scale_frames: int = 20,
    marker_sigma_m: float = 0.01,
    offset_sigma_m: float = 0.01,
    scale_sigma: float = 0.1,
    iterations: int = 40,
    accuracy: float = 1e-5,
    progress: Progress | None = None,
) -> MarkerFitResult:
    """Scale ``model`` to a person's markers, then inverse kinematics of every trial.

    Args:
        model: the body model; its scale groups are the scale parameters (e.g.
            ``model.with_scale_groups(tie_left_right=True)`` first).
        trials: motion trials (markers in metres, Z-up world, NaN gaps).
        static: a static trial, averaged over its frames.
        marker_set: the model's marker set whose names the trials use (None: site names).
        marker_weights, coordinate_targets: the IK tasks of the motion trials (as in
            :meth:`~mjx_biomech.fitting.ik.MarkerIK.solve`; coordinate values must be one number
            or None, not per frame).
        static_marker_weights, static_coordinate_targets: those of the static trial (OpenSim's
            MarkerPlacer IKTaskSet); None: the motion trials'.
        fixed_markers: markers held at the model's placement (OpenSim's ``<fixed>true``).
        scale_frames: frames of each motion trial used for scaling (evenly spaced).
        marker_sigma_m: systematic marker error (m) of one trial, against which the priors weigh
            (lower it for data without soft-tissue motion, e.g. synthetic markers).
        offset_sigma_m: prior standard deviation (m) of each offset component of a marker of
            average task weight.
        scale_sigma: prior standard deviation of each log scale about the starting scale.
        iterations: Levenberg–Marquardt systems at most.
        accuracy: the IK's convergence tolerance (rad or m).
        progress: ``progress(stage, done, total, info)``: ``"ik"`` for each IK, ``"scale"`` for
            the Schur LM (see :mod:`mjx_biomech.fitting.fit`).

    Raises:
        InputError: naming the argument: no trial, a fixed marker the marker set lacks, a
            trial sharing no tracked marker with the model, fewer than 3 markers observed.
    """
    started = time.perf_counter()
    trials = (trials,) if isinstance(trials, MarkerTrial) else tuple(trials)
    if static is None and not trials:
        raise InputError("fit_markers: give a static trial, motion trials, or both")
    solver = marker_solver(model, marker_set, fixed_markers)
    names = solver.marker_names
    static_weights, static_targets = static_tasks(marker_weights, coordinate_targets, static_marker_weights,
                                                  static_coordinate_targets)
    scaling = [(averaged_trial(static), static_weights, static_targets, np.zeros(1, int))] if static is not None else []
    scaling += [(t, marker_weights, coordinate_targets, _subsample(t.num_frames, scale_frames)) for t in trials]
    problems = [solver.problem(t, w, c) for t, w, c, _ in scaling]

    guess = _overall_guess(model, marker_set, problems)
    log_scales, free, prior = _scale_layout(model, guess)
    params0 = BodyParams(np.exp(np.asarray(log_scales)), np.zeros((len(model.site_names), 3)))

    poses, data = _starting_poses(solver, scaling, problems, params0, marker_sigma_m, accuracy, progress)
    problem, fitted = _scale_problem(model, solver, problems, data, (log_scales, free, prior), fixed_markers,
                                     offset_sigma_m, scale_sigma)
    with jax.enable_x64(True):
        u0 = jnp.asarray(problem.cmap.to_z(poses, np.zeros(len(poses))))
        p0 = jnp.asarray(np.concatenate([np.asarray(log_scales)[np.asarray(free, int)], np.zeros(3 * len(fitted))]))
        frames = jax.tree.map(jnp.asarray, data)
        u, p, history = schur_levenberg_marquardt(_residual, _prior, u0, p0, frames, problem, iterations=iterations,
                                                  rtol=_RTOL, progress=progress, stage=STAGE, linearise=_linearise)
        sigma = np.sqrt(np.diagonal(np.asarray(covariance_of_shared(_residual, _prior, u, p, frames, problem,
                                                                      _linearise))))
        # Compiled, not op by op (which compiles every primitive apart).
        params = jax.tree.map(np.asarray, jax.jit(problem.params)(p))
    scale_seconds = time.perf_counter() - started

    static_ik, results = ik_of_trials(solver, params, static, trials, (static_weights, static_targets),
                                      (marker_weights, coordinate_targets), accuracy, progress)
    k = len(free)
    offset_sigma = np.full((len(names), 3), np.nan)
    for j, name in enumerate(fitted):
        offset_sigma[names.index(name)] = sigma[k + 3 * j : k + 3 * j + 3]
    return MarkerFitResult(
        model=model, marker_set=marker_set, params=params,
        fitted_scales=tuple(model.scale_param_names[i] for i in free), marker_names=names,
        scale_sigma={model.scale_param_names[i]: float(sigma[n]) for n, i in enumerate(free)},
        offset_sigma_m=offset_sigma,
        offsets=np.asarray(params.offsets)[np.asarray(solver.site_ids)],
        fixed_markers=tuple(n for n in names if n in fixed_markers), fitted_markers=fitted, static=static_ik,
        trials=results, initial_scale=guess,
        history=np.asarray(history, float), frames_used={t.name: len(picked) for t, _, _, picked in scaling},
        scale_seconds=scale_seconds, seconds=time.perf_counter() - started,
    )
