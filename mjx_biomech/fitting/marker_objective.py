"""OpenSim's IK objective as data: what inverse kinematics and marker scaling both minimise.

One frame's objective is OpenSim's weighted marker least squares plus coordinate tasks
(:func:`frame_residuals`); :func:`ik_problem` turns a trial, marker weights and coordinate tasks
into per-frame data (:class:`Frame`) and the weights every frame shares (:class:`Weights`).
Coupled coordinates follow their functions inside the kinematics; locked coordinates, and
coordinates whose task has infinite weight, stay at their value (they do not move); clamped
coordinates have bounds, as OpenSim's assembler restricts them. :func:`frame_residuals` has the
per-frame form the Schur-complement solver takes (:mod:`mjx_biomech.fitting.solvers.schur_lm`),
so scaling uses it with the body parameters as shared variables.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mjx_biomech.body.params import BodyParams
from mjx_biomech.capture.marker_trials import MarkerTrial
from mjx_biomech.errors import InputError
from mjx_biomech.fitting.losses import observation_weights
from mjx_biomech.fitting.solvers.frame_lm import Newton

__all__ = [
    "CoordinateTarget",
    "Frame",
    "IKProblem",
    "Weights",
    "clamped_coordinates",
    "frame_gradient_at",
    "frame_jacobians",
    "frame_linearisation",
    "frame_newton",
    "frame_residuals",
    "ik_problem",
    "residuals_from_points",
]


@dataclasses.dataclass(frozen=True)
class CoordinateTarget:
    """A coordinate task: pull coordinate ``name`` towards ``value`` with ``weight``.

    ``value`` is None for the coordinate's default, a number (radians or metres) or a (T,) array,
    one per frame of the trial. ``weight = inf`` holds the coordinate at the value.
    """

    name: str
    weight: float
    value: float | np.ndarray | None = None


class Frame(NamedTuple):
    """One frame's data. ``targets`` (M, 3) m, NaN where missing; ``base`` (C,) the value of every
    coordinate that does not move; ``coordinate_targets`` (C,) rad or m."""

    targets: jax.Array
    base: jax.Array
    coordinate_targets: jax.Array


class Weights(NamedTuple):
    """What every frame shares. ``markers`` (M,) and ``coordinates`` (C,) task weights (0: not
    tracked); ``moving`` (C,) bool; ``lower``/``upper`` (C,) bounds (±inf where not clamped)."""

    markers: jax.Array
    coordinates: jax.Array
    moving: jax.Array
    lower: jax.Array
    upper: jax.Array


def frame_residuals(model, site_ids: np.ndarray, q: jax.Array, params: BodyParams, frame: Frame, weights: Weights) -> jax.Array:
    """Residuals (3M + C,) whose half squared norm is the frame's OpenSim IK objective.

    That objective is Simbody's assembly goal: ``½ Σ_m w_m |e_m|² / Σ_m w_m`` over the observed
    markers plus ``½ Σ_c w_c (q_c − q*_c)²`` over the coordinate tasks, so a marker missing in
    a frame shifts the balance towards the coordinate tasks, as in OpenSim.

    ``q`` (C,) coordinates (only the ``weights.moving`` ones are used; the rest come from
    ``frame.base``); ``site_ids`` (M,) the sites of the tracked markers.
    """
    coords = jnp.where(weights.moving, q, frame.base)
    points = model.forward(coords, params, sites=site_ids).site_xpos
    return residuals_from_points(points, coords, frame, weights)


def frame_linearisation(
    model, site_ids: np.ndarray, q: jax.Array, params: BodyParams, frame: Frame, weights: Weights
) -> tuple[jax.Array, jax.Array]:
    """:func:`frame_residuals` (3M + C,) and their Jacobian with respect to ``q`` (3M + C, C).

    The markers' Jacobian is the model's closed form (:meth:`BiomechModel.marker_jacobian`),
    weighted as :func:`frame_residuals` weights the markers; columns of coordinates that do not move
    are zero.
    """
    r, J, _ = frame_jacobians(model, site_ids, q, params, frame, weights)
    return r, J


def frame_newton(
    model, site_ids: np.ndarray, q: jax.Array, params: BodyParams, frame: Frame, weights: Weights
) -> Newton:
    """:func:`frame_residuals`'s objective as :class:`Newton` terms, for models of hinges and
    slides (:attr:`BiomechModel.has_normal_equations`): without the Jacobian
    (:meth:`BiomechModel.marker_normal_equations`); rows and columns of coordinates that do not
    move are zero."""
    coords = jnp.where(weights.moving, q, frame.base)
    targets, scale = _observed_scale(frame, weights)
    kin, g, JtJ, S, twists = model.marker_normal_equations(coords, params, site_ids, scale**2, targets, with_twists=True)
    r = residuals_from_points(kin.site_xpos, coords, frame, weights)
    moving = jnp.asarray(weights.moving, g.dtype)
    both = moving[:, None] * moving[None, :]
    return Newton(jnp.sum(r * r), _with_tasks(g, coords, frame, weights), JtJ * both + jnp.diag(weights.coordinates * moving),
                  S * both, (kin.site_xpos, twists))


def frame_gradient_at(model, site_ids: np.ndarray, point, q: jax.Array, frame: Frame, weights: Weights) -> jax.Array:
    """The gradient (C,) of ``frame``'s objective (:func:`frame_residuals`) at coordinates ``q``,
    from the ``point`` (site positions and twists) that :func:`frame_newton` returned for them
    with another frame's data: what the next frame's objective asks of the last solution."""
    coords = jnp.where(weights.moving, q, frame.base)
    targets, scale = _observed_scale(frame, weights)
    site_xpos, twists = point
    return _with_tasks(model.marker_gradient_at(twists, site_xpos, site_ids, scale**2, targets), coords, frame, weights)


def _with_tasks(g, coords, frame: Frame, weights: Weights) -> jax.Array:
    """The markers' gradient ``g`` (C,) plus the coordinate tasks', zero where nothing moves."""
    moving = jnp.asarray(weights.moving, g.dtype)
    return (g + weights.coordinates * moving * (coords - frame.coordinate_targets)) * moving


def frame_jacobians(
    model, site_ids: np.ndarray, q: jax.Array, params: BodyParams, frame: Frame, weights: Weights,
    offset_sites: Sequence[int] = (),
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """:func:`frame_linearisation` and the Jacobian (3M + C, 3K) of the residuals with respect
    to the offsets (metres, body frame) of the sites ``offset_sites`` (K,): a site's offset moves
    its marker by its body's rotation."""
    coords = jnp.where(weights.moving, q, frame.base)
    kin, jac = model.marker_jacobian(coords, params, sites=site_ids)
    points = kin.site_xpos
    moving = jnp.asarray(weights.moving, jac.dtype)
    _, scale = _observed_scale(frame, weights)
    J = jnp.concatenate([(scale[:, None, None] * jac * moving).reshape(-1, jac.shape[-1]),
                         jnp.diag(jnp.sqrt(weights.coordinates) * moving)])
    rows = 3 * len(site_ids) + len(moving)
    J_offsets = jnp.zeros((rows, 3 * len(offset_sites)), jac.dtype)
    tracked = {int(site): m for m, site in enumerate(site_ids)}
    pairs = [(tracked[int(site)], j) for j, site in enumerate(offset_sites) if int(site) in tracked]
    if pairs:
        m, j = (np.array(v) for v in zip(*pairs))
        bodies = np.asarray(model.mj_model.site_bodyid)[np.asarray(site_ids)[m]]
        blocks = scale[m][:, None, None] * kin.xmat[bodies]  # (P, 3, 3)
        r_index = 3 * m[:, None, None] + np.arange(3)[None, :, None]
        c_index = 3 * j[:, None, None] + np.arange(3)[None, None, :]
        J_offsets = J_offsets.at[r_index, c_index].set(blocks)
    return residuals_from_points(points, coords, frame, weights), J, J_offsets


def _observed_scale(frame: Frame, weights: Weights):
    """The targets (M, 3) with missing ones zeroed, and each marker's residual factor (M,),
    √(w_m / Σ w) over the observed markers (0 where not observed)."""
    targets, w = observation_weights(frame.targets, weights.markers)
    return targets, jnp.sqrt(w / jnp.maximum(jnp.sum(w), jnp.finfo(w.dtype).tiny))


def residuals_from_points(points, coords, frame: Frame, weights: Weights) -> jax.Array:
    """:func:`frame_residuals` from the tracked markers' positions ``points`` (M, 3) at ``coords`` (C,)."""
    targets, scale = _observed_scale(frame, weights)
    markers = scale[:, None] * (points - targets)
    tasks = jnp.sqrt(weights.coordinates) * (coords - frame.coordinate_targets)
    return jnp.concatenate([markers.ravel(), tasks])


def clamped_coordinates(model) -> np.ndarray:
    """(C,) bool: coordinates whose range IK respects.

    A converted .osim says so in its metadata (OpenSim's ``clamped``); other models clamp the
    coordinates whose MuJoCo joint is limited.
    """
    meta = {c.get("name"): c for c in model.metadata.get("coordinates", ())}
    m = model.mj_model
    out = []
    for c in model.coordinates:
        if "clamped" in meta.get(c.name, {}):
            out.append(bool(meta[c.name]["clamped"]))
        elif c.kind == "joint":
            joint = next(j for j in range(m.njnt) if int(m.jnt_qposadr[j]) == c.qposadr)
            out.append(bool(m.jnt_limited[joint]))
        else:
            out.append(False)
    return np.array(out, dtype=bool)


@dataclasses.dataclass(frozen=True)
class IKProblem:
    """One trial's IK as data: ``frames`` (a :class:`Frame` of (T, ...) arrays), ``weights``
    (:class:`Weights`, NumPy), and the marker names the trial lacks (``skipped_markers``, only
    those the tasks ask for) or that the model lacks (``unmatched_markers``)."""

    frames: Frame
    weights: Weights
    skipped_markers: tuple[str, ...]
    unmatched_markers: tuple[str, ...]


def ik_problem(
    model, marker_names: Sequence[str], trial: MarkerTrial, marker_weights: Mapping[str, float] | None = None,
    coordinate_targets: Sequence[CoordinateTarget] = (),
) -> IKProblem:
    """``trial``'s IK with ``model`` as data, tracking ``marker_names`` (M,) of the model.

    Args:
        marker_weights: marker name -> weight of the markers to track (OpenSim's applied
            IKMarkerTasks); None tracks every one the trial has, with weight 1.
        coordinate_targets: coordinate tasks.

    Raises:
        InputError: naming the argument, for a weight or task naming an unknown marker or
            coordinate, a negative weight, or a trial sharing no tracked marker with the model.
    """
    weights, skipped, unmatched = _marker_weights(model, marker_names, trial, marker_weights)
    base, targets, task_w = _coordinate_tasks(model, coordinate_targets, trial.num_frames)
    locked = np.array([c.locked for c in model.coordinates], bool)
    held = locked | np.isinf(task_w)
    clamped = clamped_coordinates(model)
    ranges = model.coordinate_ranges
    # A held coordinate's task is a constraint, not a term of the objective (OpenSim drops it).
    return IKProblem(
        Frame(trial.select(marker_names), base, targets),
        Weights(weights, np.where(held, 0.0, task_w), ~held, np.where(clamped, ranges[:, 0], -np.inf),
                np.where(clamped, ranges[:, 1], np.inf)),
        skipped, unmatched,
    )


def _marker_weights(model, marker_names, trial: MarkerTrial, marker_weights):
    """(M,) weights over ``marker_names`` (0: not tracked), skipped and unmatched names."""
    in_trial = set(trial.marker_names)
    model_names = set(marker_names)
    asked = model_names if marker_weights is None else set(marker_weights)
    if marker_weights is None:
        marker_weights = {n: 1.0 for n in marker_names if n in in_trial}
    unknown = sorted(n for n in marker_weights if n not in model_names and n not in in_trial)
    if unknown:
        raise InputError(f"marker_weights: {unknown} are markers neither the model ({model.source}) "
                         f"nor the trial ({trial.source}) has")
    bad = sorted(n for n, w in marker_weights.items() if not (np.isfinite(w) and w >= 0))
    if bad:
        raise InputError(f"marker_weights: the weights of {bad} must be finite and >= 0")
    skipped = tuple(n for n in marker_names if n in asked and n not in in_trial)
    unmatched = tuple(n for n in trial.marker_names if n not in model_names or n not in marker_weights)
    weights = np.array([marker_weights.get(n, 0.0) if n in in_trial else 0.0 for n in marker_names])
    if not np.any(weights > 0):
        raise InputError(f"{trial.source}: none of the trial's markers {list(trial.marker_names)[:6]}... is a "
                         f"tracked marker of {model.source} ({list(marker_names)[:6]}...)")
    return weights, skipped, unmatched


def _coordinate_tasks(model, tasks: Sequence[CoordinateTarget], T: int):
    """``base`` (T, C) fixed values, ``targets`` (T, C), ``weights`` (C,) (inf: held)."""
    names = model.coordinate_names
    defaults = np.array([c.default for c in model.coordinates])
    base = np.tile(defaults, (T, 1))
    targets = base.copy()
    weights = np.zeros(len(names))
    for task in tasks:
        if task.name not in names:
            raise InputError(f"coordinate_targets: {task.name!r} is not an independent coordinate of "
                             f"{model.source} (coordinates: {', '.join(names)})")
        if not (task.weight >= 0):
            raise InputError(f"coordinate_targets: {task.name!r} has weight {task.weight}; expected >= 0")
        i = names.index(task.name)
        value = defaults[i] if task.value is None else np.asarray(task.value, dtype=float)
        if np.ndim(value) != 0 and np.shape(value) != (T,):
            raise InputError(f"coordinate_targets: {task.name!r} has {np.shape(value)} values; expected one "
                             f"or one per frame ({T})")
        targets[:, i] = value
        weights[i] = task.weight
        if np.isinf(task.weight):
            base[:, i] = value
    return base, targets, weights
