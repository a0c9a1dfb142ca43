"""Scaling as OpenSim's ScaleTool does it, for users who keep their lab's measurement set.

:func:`measured_body_scales` is OpenSim's ModelScaler: each measurement's factor is the mean,
over its marker pairs, of the pair's distance in the trial (averaged over the frames that see
both markers) divided by the same distance on the unscaled model at its default pose; the
factor scales the measurement's bodies along the axes it names (bodies the model lacks are
skipped with a warning, as a measurement set written for a related model names some). Manual scales set a body's three
factors. The steps run in the setup's ``scaling_order``; a later step overrides an earlier one
for the bodies and axes it names; a body no step names keeps 1.

:func:`scale_by_factors` then does what ScaleTool's MarkerPlacer does: inverse kinematics of the
static trial (averaged over its frames) with the scaled model, and every marker that is observed
and not ``fixed`` moved onto its observed position in its body's frame. The result is the same
:class:`~mjx_biomech.fitting.markers.MarkerFitResult` as the fitted scaling's, so every output
is written the same way.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Collection, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mjx_biomech.body.params import BodyParams
from mjx_biomech.capture.marker_trials import MarkerTrial
from mjx_biomech.errors import InputError
from mjx_biomech.fitting.marker_objective import CoordinateTarget
from mjx_biomech.fitting.markers import MarkerFitResult, averaged_trial, ik_of_trials, marker_solver, static_tasks
from mjx_biomech.fitting.solvers import Progress

__all__ = ["Measurement", "measured_body_scales", "scale_by_factors"]

_AXES = "XYZ"


@dataclasses.dataclass(frozen=True)
class Measurement:
    """An OpenSim ``<Measurement>``: the distances between ``marker_pairs`` give one factor,
    applied to each body of ``body_axes`` (body name, axes such as ``"XYZ"`` or ``"Y"``)."""

    name: str
    marker_pairs: tuple[tuple[str, str], ...]
    body_axes: tuple[tuple[str, str], ...]


def measured_body_scales(
    model,
    trial: MarkerTrial,
    measurements: Sequence[Measurement] = (),
    manual_scales: Mapping[str, Sequence[float]] | None = None,
    order: Sequence[str] = ("measurements",),
    marker_set: str | None = None,
) -> dict[str, np.ndarray]:
    """Body name -> (3,) scale factors of the bodies a step names (the others keep 1), OpenSim's
    ModelScaler on ``trial`` (see the module).

    Args:
        model: the unscaled model, with the markers the measurements name.
        trial: the static trial (its frames in the time range averaged pair by pair).
        measurements: the measurements applied.
        manual_scales: body name -> (3,) factors (OpenSim's ``ScaleSet``).
        order: the steps, ``"measurements"`` and ``"manualScale"``, in OpenSim's ``scaling_order``.
        marker_set: the model's marker set the names belong to (None: the site names).

    Raises:
        InputError: naming the measurement, for an unknown step, marker, body or axis, or a
            marker pair the trial never sees together.
    """
    manual = dict(manual_scales or {})
    names = model.marker_names(marker_set)
    with jax.enable_x64(True):
        defaults = jnp.asarray([c.default for c in model.coordinates], jnp.float64)
        # Compiled, not op by op (which compiles every primitive of the model apart).
        markers = jax.jit(model.markers, static_argnums=2)
        on_model = np.asarray(markers(defaults, model.default_params(jnp.float64), marker_set))
    scales: dict[str, np.ndarray] = {}
    missing: list[str] = []
    for step in order:
        if step == "measurements":
            for m in measurements:
                factor = _factor(m, names, on_model, trial)
                for body, axes in m.body_axes:
                    if body not in model.body_names[1:]:
                        missing.append(body)
                        continue
                    scales.setdefault(body, np.ones(3))
                    for axis in axes.upper():
                        if axis not in _AXES:
                            raise InputError(f"measurement {m.name!r}: body {body!r} axis {axis!r}; expected X, Y or Z")
                        scales[body][_AXES.index(axis)] = factor
        elif step == "manualScale":
            for body, values in manual.items():
                _check_body(model, body, "manual scales")
                values = np.asarray(values, float)
                if values.shape != (3,) or not np.all(np.isfinite(values) & (values > 0)):
                    raise InputError(f"manual scales: body {body!r} has {values.tolist()}; expected three positive numbers")
                scales[body] = values.copy()
        else:
            raise InputError(f"scaling order: {step!r}; expected 'measurements' or 'manualScale'")
    if missing:
        # As OpenSim's ModelScaler, a measurement set written for a related model may name bodies this one lacks.
        warnings.warn(f"measurements name bodies {sorted(set(missing))} that {model.source} lacks; skipped", stacklevel=2)
    return scales


def _check_body(model, body: str, where: str) -> None:
    if body not in model.body_names[1:]:
        raise InputError(f"{where}: body {body!r} is not a body of {model.source}")


def _factor(m: Measurement, names: Sequence[str], on_model: np.ndarray, trial: MarkerTrial) -> float:
    """The mean over ``m``'s pairs of trial distance / model distance."""
    if not m.marker_pairs:
        raise InputError(f"measurement {m.name!r}: no marker pairs")
    ratios = []
    for a, b in m.marker_pairs:
        for name in (a, b):
            if name not in names:
                raise InputError(f"measurement {m.name!r}: marker {name!r} is not a marker of the model")
            if name not in trial.marker_names:
                raise InputError(f"measurement {m.name!r}: marker {name!r} is not in {trial.source}")
        ends = trial.select([a, b])  # (T, 2, 3)
        distance = np.linalg.norm(ends[:, 0] - ends[:, 1], axis=-1)
        distance = distance[np.isfinite(distance)]
        if distance.size == 0:
            raise InputError(f"measurement {m.name!r}: {trial.source} never has both {a!r} and {b!r}")
        model_distance = float(np.linalg.norm(on_model[names.index(a)] - on_model[names.index(b)]))
        if model_distance <= 0:
            raise InputError(f"measurement {m.name!r}: markers {a!r} and {b!r} coincide on the model")
        ratios.append(float(np.mean(distance)) / model_distance)
    return float(np.mean(ratios))


def scale_by_factors(
    model,
    body_scales: Mapping[str, Sequence[float]],
    static: MarkerTrial,
    trials: Sequence[MarkerTrial] = (),
    *,
    marker_set: str | None = None,
    marker_weights: Mapping[str, float] | None = None,
    coordinate_targets: Sequence[CoordinateTarget] = (),
    static_marker_weights: Mapping[str, float] | None = None,
    static_coordinate_targets: Sequence[CoordinateTarget] | None = None,
    fixed_markers: Collection[str] = (),
    place_markers: bool = True,
    accuracy: float = 1e-5,
    progress: Progress | None = None,
) -> MarkerFitResult:
    """``model`` scaled by ``body_scales`` (body name -> (3,) factors, e.g. from
    :func:`measured_body_scales`), markers placed on the static trial as OpenSim's MarkerPlacer
    does (unless ``place_markers`` is False), then inverse kinematics of every trial.

    The model's scale groups become one per-axis group per body of ``body_scales``. Arguments
    as :func:`~mjx_biomech.fitting.markers.fit_markers`.
    """
    started = time.perf_counter()
    for body in body_scales:
        _check_body(model, body, "body scales")
    groups = [{"name": b, "bodies": [b], "per_axis": True} for b in body_scales]
    model = model.with_scale_groups(groups)
    solver = marker_solver(model, marker_set, fixed_markers)
    names = solver.marker_names
    values = {f"{b}.{axis}": float(v) for b, s in body_scales.items() for axis, v in zip("xyz", s)}
    # float64 throughout (the model's own default params follow JAX's default precision).
    params = BodyParams(np.array([values.get(n, 1.0) for n in model.scale_param_names]), np.zeros((len(model.site_names), 3)))
    static_weights, static_targets = static_tasks(marker_weights, coordinate_targets, static_marker_weights,
                                                  static_coordinate_targets)
    placed: tuple[str, ...] = ()
    if place_markers:
        pose = solver.solve(averaged_trial(static), params, static_weights, static_targets, accuracy=accuracy,
                            progress=progress).coordinates[0]
        params, placed = _place(model, solver, params, pose, averaged_trial(static), set(fixed_markers))
    scale_seconds = time.perf_counter() - started
    static_ik, results = ik_of_trials(solver, params, static, trials, (static_weights, static_targets),
                                      (marker_weights, coordinate_targets), accuracy, progress)
    params = jax.tree.map(np.asarray, params)
    return MarkerFitResult(
        model=model, marker_set=marker_set, params=params, fitted_scales=(), marker_names=names,
        offsets=np.asarray(params.offsets)[np.asarray(solver.site_ids)],
        fixed_markers=tuple(n for n in names if n in fixed_markers), fitted_markers=placed, static=static_ik,
        trials=results, initial_scale=1.0, history=np.zeros(0), frames_used={static.name: static.num_frames},
        scale_seconds=scale_seconds, seconds=time.perf_counter() - started,
    )


def _place(model, solver, params: BodyParams, pose: np.ndarray, frame: MarkerTrial, fixed: set[str]):
    """``params`` with every observed, unfixed marker moved onto ``frame``'s position at ``pose``."""
    observed = frame.select(solver.marker_names)[0]  # (M, 3)
    with jax.enable_x64(True):
        kin = jax.jit(model.forward)(jnp.asarray(pose), jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params))
        site_xpos, xmat = np.asarray(kin.site_xpos), np.asarray(kin.xmat)
    offsets = np.array(params.offsets, dtype=float)
    placed = []
    for k, name in enumerate(solver.marker_names):
        if name in fixed or not np.all(np.isfinite(observed[k])):
            continue
        site = int(solver.site_ids[k])
        body = int(model.mj_model.site_bodyid[site])
        offsets[site] += xmat[body].T @ (observed[k] - site_xpos[site])
        placed.append(name)
    return params.replace(offsets=offsets), tuple(placed)
