"""Marker-based inverse kinematics: OpenSim's InverseKinematicsTool, frame by frame, in JAX.

Each frame solves OpenSim's weighted least squares
(:func:`~mjx_biomech.fitting.marker_objective.frame_residuals`) over the model's independent
coordinates that move, clamped ones inside their ranges.

The solver is the projected Levenberg–Marquardt of :mod:`~mjx_biomech.fitting.solvers.frame_lm`
with the objective's second-order term, which large marker residuals (centimetres on real
recordings) make matter. For models of hinges and slides (every converted .osim and the bundled
model) that term is exact and comes with the gradient and ``JᵀJ`` in closed form, without the
Jacobian (:func:`~mjx_biomech.fitting.marker_objective.frame_newton`): damped Newton, two or three
evaluations a frame on a real walk. Other models use a secant estimate carried from frame to
frame. A frame stops when every coordinate is within ``accuracy`` (radians or metres) of the
optimum: the next step is that small, or the contraction of the steps says the rest is.

As OpenSim's tool does, the first frame starts from the model's default pose; every later one
starts from the previous solution, here extrapolated linearly from the two before it. The frames
run sequentially (``lax.scan``) in chunks of a fixed length, so one compilation serves every
trial length and a progress callback runs between chunks. (A sequential pass of one step per
frame followed by converging all frames of a chunk at once under ``vmap`` was slower on a CPU:
every frame then iterates as long as the slowest one.)

Everything that changes between trials (observations, weights, targets, bounds, which
coordinates move, the body parameters) is data, so a solver compiles once per model, marker set
and chunk length.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mjx_biomech.body.params import BodyParams
from mjx_biomech.capture.marker_trials import MarkerTrial
from mjx_biomech.errors import InputError
from mjx_biomech.fitting.marker_objective import (
    CoordinateTarget,
    Frame,
    IKProblem,
    frame_gradient_at,
    frame_linearisation,
    frame_newton,
    ik_problem,
    residuals_from_points,
)
from mjx_biomech.fitting.solvers import Progress
from mjx_biomech.fitting.solvers.frame_lm import solve_frame
from mjx_biomech.program_cache import compile_closure

__all__ = ["IKResult", "MarkerIK", "marker_ik", "solve_ik"]

STAGE = "ik"
# Iterations allowed to the first frame, which starts from the default pose.
_FIRST_FRAME_ITERATIONS = 200


@dataclasses.dataclass(frozen=True)
class IKResult:
    """Joint angles and marker errors of one trial.

    Attributes:
        name: the trial's name.
        times: (T,) seconds.
        coordinate_names: (C,) the model's independent coordinates.
        coordinate_motion: (C,) ``"rotational"`` or ``"translational"``.
        coordinates: (T, C) radians or metres.
        marker_names: (M,) the markers tracked.
        marker_weights: (M,) their weights.
        marker_errors: (T, M) metres, model marker to observation; NaN where not observed.
        objective: (T,) OpenSim's IK objective at the solution
            (:func:`~mjx_biomech.fitting.marker_objective.frame_residuals`).
        iterations: (T,) evaluations of residuals and Jacobian (Levenberg–Marquardt iterations).
        converged: (T,) bool: the last step was within ``accuracy``.
        skipped_markers: markers the model has that the trial lacks (only those the tasks name, when
            marker weights are given).
        unmatched_markers: trial markers that the model lacks (or no task names).
        compile_seconds: compiling the solver (0 when reused).
        solve_seconds: solving every frame.
        coordinate_std: (T, C) standard error of each coordinate (radians or metres): the
            Gauss–Newton (Laplace) covariance ``σ² (Σ_m w_m J_mᵀ J_m)⁻¹`` at the solution, with the
            unit-weight marker noise ``σ`` estimated from the trial's residuals; 0 for coordinates
            that do not move or sit on a bound, NaN for one no observed marker determines and in
            frames without markers.
        noise_sigma_m: that ``σ`` (m, per axis, for a marker of weight 1).
    """

    name: str
    times: np.ndarray
    coordinate_names: tuple[str, ...]
    coordinate_motion: tuple[str, ...]
    coordinates: np.ndarray
    marker_names: tuple[str, ...]
    marker_weights: np.ndarray
    marker_errors: np.ndarray
    objective: np.ndarray
    iterations: np.ndarray
    converged: np.ndarray
    skipped_markers: tuple[str, ...]
    unmatched_markers: tuple[str, ...]
    compile_seconds: float
    solve_seconds: float
    coordinate_std: np.ndarray | None = None
    noise_sigma_m: float = float("nan")

    @property
    def total_squared_error(self) -> np.ndarray:
        """(T,) m²: Σ of squared marker errors, missing markers counting 0 (OpenSim's column)."""
        return np.nansum(self.marker_errors**2, axis=1)

    @property
    def marker_rms(self) -> np.ndarray:
        """(T,) m: sqrt(total squared error / markers tracked), as OpenSim's ``marker_error_RMS``."""
        return np.sqrt(self.total_squared_error / max(len(self.marker_names), 1))

    @property
    def marker_max(self) -> np.ndarray:
        """(T,) m: the largest marker error of each frame (OpenSim's ``marker_error_max``)."""
        errors = np.where(np.isnan(self.marker_errors), 0.0, self.marker_errors)
        return errors.max(axis=1) if errors.shape[1] else np.zeros(len(self.times))


class MarkerIK:
    """A compiled IK solver for one model and one marker set.

    Args:
        model: the body model.
        marker_set: the model's marker set naming the markers, or None for the site names (for
            a converted .osim, the OpenSim markers).
        chunk_frames: frames solved per compiled call; a trial is padded to a multiple of it.
    """

    def __init__(self, model, marker_set: str | None = None, chunk_frames: int = 128):
        names = model.marker_names(marker_set)
        if not names:
            raise InputError(f"{model.source}: the model has no markers (sites) to track"
                             + (f" in marker set {marker_set!r}" if marker_set else ""))
        self.model = model
        self.marker_set = marker_set
        self.marker_names = tuple(names)
        self.site_ids = np.asarray(model.marker_site_ids(marker_set))
        self.chunk_frames = int(chunk_frames)
        self._compiled: dict = {}
        self._point_shape = None

        def chunk(x, v, S, prev, params, frames, first, limits, weights, accuracy):
            # Newton's method where the model has its equations in closed form (hinges and slides),
            # else Levenberg–Marquardt with a secant second-order term.
            newton = model.has_normal_equations

            def linearise(frame):
                if newton:
                    return lambda q: frame_newton(model, self.site_ids, q, params, frame, weights)
                return lambda q: frame_linearisation(model, self.site_ids, q, params, frame, weights)

            def one(carry, data):
                frame, is_first, limit = data
                x, v, S, prev = carry
                # The trial's first frame starts from the default pose, as OpenSim assembles it, and
                # may take long; later ones from the previous solution moved on by its velocity, or,
                # with Newton's method, by the step the last Newton model takes towards this frame's
                # data: its gradient at the last evaluated pose, from that pose's twists (no walk),
                # solved with the last factor. That start is as close as one more evaluation would
                # get, and saves it. Frames padding the last chunk have no evaluation (a limit of 0).
                seen = jnp.any(jnp.all(jnp.isfinite(frame.targets), axis=-1) & (weights.markers > 0))
                start = jnp.clip(x + v, weights.lower, weights.upper)
                use = jnp.asarray(False)
                if newton:
                    base, factor, free, point = prev
                    g = frame_gradient_at(model, self.site_ids, point, base, frame, weights)
                    step = jax.scipy.linalg.cho_solve((factor, True), jnp.where(free, -g, 0.0))
                    predicted = jnp.clip(base + step, weights.lower, weights.upper)
                    # Not across a bound: a model whose active set changes predicts nothing useful.
                    inside = jnp.all(free == weights.moving) & jnp.all(predicted == base + step)
                    use = ~is_first & seen & inside & jnp.all(jnp.isfinite(predicted))
                    start = jnp.where(use, predicted, start)
                state, converged = solve_frame(linearise(frame), start, S, weights.moving, weights.lower, weights.upper,
                                               accuracy, limit, newton_start=use)
                # A frame without any tracked marker stays where it started, and the next starts there:
                # a long gap must not carry the pose away.
                v = jnp.where(is_first | ~seen, 0.0, state.x - x)
                if newton:
                    evaluated = state.x - jnp.where(converged, state.step, 0.0)
                    prev = (evaluated, state.factor, state.free, state.point)
                return (state.x, v, state.S, prev), (state.x, state.iterations, converged, state.JtJ)

            (x, v, S, prev), (q, iterations, converged, JtJ) = jax.lax.scan(one, (x, v, S, prev),
                                                                            (frames, first, limits))
            coords = jnp.where(weights.moving, q, frames.base)
            points = jax.vmap(lambda c: model.forward(c, params, sites=self.site_ids).site_xpos)(coords)
            objective, *spread = jax.vmap(lambda *a: _spread_terms(*a, weights))(points, JtJ, coords, frames)
            return (x, v, S, prev), (coords, objective, iterations, converged, points, *spread)

        self._chunk = chunk

    def _no_previous(self, params, frames: Frame, weights) -> tuple | None:
        """The chunk's starting ``prev`` (the last frame's evaluated pose, factor, free variables
        and Newton point), zeros of their shapes; None without Newton's method."""
        if not self.model.has_normal_equations:
            return None
        C = self.model.num_coordinates
        if self._point_shape is None:  # traced once: it depends only on the model and the markers
            frame = Frame(*(a[0] for a in frames))
            self._point_shape = jax.eval_shape(
                lambda q: frame_newton(self.model, self.site_ids, q, params, frame, weights).point, np.zeros(C))
        point = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), self._point_shape)
        return np.zeros(C), np.eye(C), np.zeros(C, bool), point

    def _compiled_fn(self, name: str, fn, *args):
        """``fn`` compiled for the shapes of ``args`` and the seconds compiling took (0 if cached)."""
        key = (name, tuple((jnp.shape(a), jnp.result_type(a)) for a in jax.tree.leaves(args)))
        if key in self._compiled:
            return self._compiled[key], 0.0
        start = time.perf_counter()
        # The chunk's trace reads the model and the marker sites besides its arguments.
        closure = (self.model, tuple(int(i) for i in self.site_ids))
        self._compiled[key] = compile_closure(f"{__name__}.MarkerIK.{name}", fn, args, closure, _compiler_options())
        return self._compiled[key], time.perf_counter() - start

    def solve(
        self,
        trial: MarkerTrial,
        params: BodyParams | None = None,
        marker_weights: Mapping[str, float] | None = None,
        coordinate_targets: Sequence[CoordinateTarget] = (),
        accuracy: float = 1e-5,
        max_iterations: int = 50,
        initial: np.ndarray | None = None,
        progress: Progress | None = None,
    ) -> IKResult:
        """Inverse kinematics of every frame of ``trial``.

        Args:
            trial: observed markers, metres, Z-up world.
            params: the person's scales and marker offsets (default: the model's own).
            marker_weights: marker name -> weight of the markers to track (OpenSim's applied
                IKMarkerTasks); None tracks every model marker the trial has, with weight 1.
            coordinate_targets: coordinate tasks.
            accuracy: convergence tolerance on each coordinate's step, radians or metres.
            max_iterations: per frame (the first frame, solved from the default pose, gets 200).
            initial: (C,) the first frame's starting coordinates (default: the model's defaults).
            progress: ``progress("ik", frames_done, frames_total, {"trial": name})`` at the start
                and after each chunk of frames (the library's convention, :mod:`mjx_biomech.fitting.fit`).

        Raises:
            InputError: naming the argument, for a weight or task naming an unknown marker or
                coordinate, a negative weight, or a trial sharing no tracked marker with the model.
        """
        model = self.model
        problem = self.problem(trial, marker_weights, coordinate_targets)
        T = trial.num_frames
        q0 = self._initial(initial, problem.frames.base[0], problem.weights.lower, problem.weights.upper)

        with jax.enable_x64(True):
            # NumPy in, as the compiled call takes it: no device operations before it.
            if params is None:
                params = BodyParams(np.ones(len(model.scale_param_names)), np.zeros((len(model.site_names), 3)))
            params = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
            weights = problem.weights._replace(**{f: np.asarray(getattr(problem.weights, f), np.float64)
                                                  for f in ("markers", "coordinates", "lower", "upper")})
            n = self.chunk_frames
            chunks = -(-T // n)
            # Padding repeats the last frame, and is not solved.
            pad = chunks * n - T

            # NumPy until the compiled call: JAX arrays sliced op by op would compile each slice.
            def padded(a):
                return np.concatenate([a, np.repeat(a[-1:], pad, axis=0)]).astype(np.float64)

            frames = Frame(*map(padded, problem.frames))
            first = np.arange(chunks * n) == 0
            limits = np.where(first, max(max_iterations, _FIRST_FRAME_ITERATIONS), max_iterations).astype(np.int64)
            limits[T:] = 0
            C = model.num_coordinates
            carry = (np.asarray(q0, np.float64), np.zeros(C), np.zeros((C, C)), self._no_previous(params, frames, weights))
            settings = (weights, np.float64(accuracy))

            def part(k):
                return jax.tree.map(lambda a: a[k * n : (k + 1) * n], (frames, first, limits))

            chunk, compile_s = self._compiled_fn("chunk", self._chunk, *carry, params, *part(0), *settings)
            start = time.perf_counter()
            if progress is not None:
                progress(STAGE, 0, T, {"trial": trial.name})
            out = []
            for k in range(chunks):
                carry, result = chunk(*carry, params, *part(k), *settings)
                out.append(result)
                if progress is not None:
                    jax.block_until_ready(result)
                    progress(STAGE, min((k + 1) * n, T), T, {"trial": trial.name})
            coords, objective, it, ok, points, h_inv, total, observed, free, squared = (
                np.concatenate([np.asarray(o[i]) for o in out])[:T] for i in range(10))
            solve_s = time.perf_counter() - start
        # The unit-weight marker noise pooled over the trial (weighted squared errors over the degrees
        # of freedom), then each frame's covariance sigma² (Σ w J_mᵀ J_m)⁻¹ (Laplace approximation).
        dof = float(np.sum(observed - free))
        noise = float(np.sqrt(np.sum(squared * total) / dof)) if dof > 0 else float("nan")
        with np.errstate(divide="ignore", invalid="ignore"):
            std = np.where(total[:, None] > 0, np.sqrt(noise**2 / total[:, None] * h_inv), np.nan)
        weights_np = problem.weights.markers
        keep = weights_np > 0
        errors = np.linalg.norm(points - problem.frames.targets, axis=-1)
        return IKResult(
            name=trial.name, times=trial.times, coordinate_names=model.coordinate_names,
            coordinate_motion=model.coordinate_motion, coordinates=coords,
            marker_names=tuple(name for name, k in zip(self.marker_names, keep) if k), marker_weights=weights_np[keep],
            marker_errors=errors[:, keep], objective=objective, iterations=it.astype(int), converged=ok.astype(bool),
            skipped_markers=problem.skipped_markers, unmatched_markers=problem.unmatched_markers, compile_seconds=compile_s,
            solve_seconds=solve_s, coordinate_std=std, noise_sigma_m=noise,
        )

    def problem(
        self, trial: MarkerTrial, marker_weights: Mapping[str, float] | None = None,
        coordinate_targets: Sequence[CoordinateTarget] = (),
    ) -> IKProblem:
        """The per-frame data and the weights of ``trial``'s IK
        (:func:`~mjx_biomech.fitting.marker_objective.ik_problem`)."""
        return ik_problem(self.model, self.marker_names, trial, marker_weights, coordinate_targets)

    def _initial(self, initial, base0, lower, upper):
        model = self.model
        if initial is None:
            q0 = base0
        else:
            q0 = np.asarray(initial, dtype=float)
            if q0.shape != (model.num_coordinates,):
                raise InputError(f"initial: shape {q0.shape}; expected ({model.num_coordinates},) in "
                                 "model.coordinate_names order")
        return np.clip(q0, lower, upper)


def _compiler_options() -> dict:
    """XLA options of the IK program. On a CPU, XLA's older loop emitter: for this chain of small
    kernels its code ran the gait2392 walk 15 % faster than the default fusion emitters (XLA 0.9.2)."""
    return {"xla_cpu_use_fusion_emitters": False} if jax.default_backend() == "cpu" else {}


def _spread_terms(points, JtJ, coords, frame: Frame, weights):
    """The frame's objective ``½|r|²`` at the solution ``coords`` (C,), its markers at ``points``
    (M, 3), and what its covariance needs: the diagonal of ``(JᵀJ)⁻¹`` over the coordinates
    free at the solution (moving, off their bounds, seen by some marker; 0 for the others that are
    held, NaN for unseen ones), the frame's total marker weight, its observed residual count, its
    free count and its normalised squared marker residual.

    ``JtJ`` (C, C) is the solver's last Gauss–Newton matrix, evaluated one converged step (within
    the accuracy) before the solution: evaluating it again at the solution would cost a frame a
    third of its solve, for a change of that order in the spread."""
    r = residuals_from_points(points, coords, frame, weights)
    M = frame.targets.shape[0]
    d = jnp.diagonal(JtJ)
    eps = jnp.finfo(JtJ.dtype).eps
    seen = d > eps * jnp.maximum(jnp.max(d), 1.0)
    held = ~weights.moving | (coords <= weights.lower) | (coords >= weights.upper)
    free = ~held & seen
    n = coords.shape[0]
    A = jnp.where(free[:, None] & free[None, :], JtJ, jnp.eye(n, dtype=JtJ.dtype))
    # diag(A⁻¹) = the columns' squared norms of L⁻¹ (A = L Lᵀ): one triangular solve, not two.
    L_inv = jax.scipy.linalg.solve_triangular(jnp.linalg.cholesky(A), jnp.eye(n, dtype=JtJ.dtype), lower=True)
    h_inv = jnp.where(free, jnp.sum(L_inv**2, axis=0), jnp.where(held, 0.0, jnp.nan))
    observed = jnp.all(jnp.isfinite(frame.targets), axis=-1) & (weights.markers > 0)
    total = jnp.sum(jnp.where(observed, weights.markers, 0.0))
    squared = jnp.sum(r[: 3 * M] ** 2)
    return 0.5 * jnp.sum(r * r), h_inv, total, 3 * jnp.sum(observed), jnp.sum(free), squared


_SOLVERS: dict = {}


def marker_ik(model, marker_set: str | None = None) -> MarkerIK:
    """The :class:`MarkerIK` of ``model`` and ``marker_set``, kept so that repeated calls compile once."""
    key = (id(model), marker_set)
    cached = _SOLVERS.get(key)
    if cached is None or cached.model is not model:
        cached = _SOLVERS[key] = MarkerIK(model, marker_set)
    return cached


def solve_ik(
    model,
    trial: MarkerTrial,
    params: BodyParams | None = None,
    marker_set: str | None = None,
    **options,
) -> IKResult:
    """Inverse kinematics of ``trial`` with ``model``: :meth:`MarkerIK.solve` of :func:`marker_ik`.
    ``options`` go to ``solve``."""
    return marker_ik(model, marker_set).solve(trial, params, **options)
