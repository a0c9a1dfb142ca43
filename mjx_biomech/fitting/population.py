"""Learning the base model's marker placement over many people (the trilevel fit).

Every subject has its own motion and segment scales; every marker's offset is the sum of a
*base* offset shared by the whole population and the subject's own offset, which a prior pulls
towards 0. Steps draw a minibatch of subjects (smaller than the population), so the cost of a
step does not grow with it. Anchored markers (by default the heels) keep a base offset of 0:
with every marker free, a common shift of all markers is indistinguishable from a change of
the body's pose and proportions.

The subjects are shared out over the devices (a 1-D mesh, axis ``"subjects"``): their data,
variables and optimiser state are split along the subject axis, each step's minibatch is split
the same way, and the base offsets are replicated, so a node with several accelerators fits
its share of the minibatch on each (data parallel) and the steps are those of one device, up to
the order of the sums. A population or minibatch that does not split evenly is padded with
copies of subject 0: padded subjects are never drawn, and padded minibatch places are left out
of the mean, so any ``batch_size`` works on any number of devices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mjx_biomech.body.params import BodyParams
from mjx_biomech.capture.cameras import CameraRig
from mjx_biomech.capture.captures import Capture
from mjx_biomech.errors import InputError
from mjx_biomech.fitting import initialisation, losses, trajectories
from mjx_biomech.fitting.fit import check_captures
from mjx_biomech.fitting.solvers import Progress, adam
from mjx_biomech.fitting.variables import OFFSET_UNIT_M, site_offsets

STAGE = "population"
SUBJECTS = "subjects"  # the mesh axis the subjects are split over
_OPTIMISER = adam.optimiser()


@dataclass(frozen=True)
class _PopSetup:
    model: object
    marker_set: str
    site_ids: tuple[int, ...]
    cmap: trajectories.CoordinateMap
    t_start: float
    t_end: float
    free_base: tuple[bool, ...]
    scale_prior: tuple[bool, ...]
    delta_px: float
    offset_weight: float
    base_weight: float
    scale_weight: float
    subjects: int
    batch_pad: int
    split: NamedSharding


class PopulationVariables(eqx.Module):
    """``base`` (M, 3) cm shared offsets; per subject (leading axis S, padded to a multiple of
    the devices and split over them): spline ``control`` (S, K, A), ``log_scales`` (S, P) and own
    ``offsets`` (S, M, 3) cm."""

    base: jax.Array
    control: jax.Array
    log_scales: jax.Array
    offsets: jax.Array


@dataclass(frozen=True)
class PopulationResult:
    """The learned ``base_offsets`` (M, 3) m of the marker set (in each marker's body frame),
    every subject's :class:`BodyParams` (base plus own offsets) and coordinates at the frames
    (S, T, C), and the loss per step."""

    marker_set: str
    base_offsets: np.ndarray
    params: list[BodyParams]
    coords: np.ndarray
    loss_history: np.ndarray


def _subject_loss(setup: _PopSetup, base, control, log_scales, offsets, rig, keypoints, confidence, times, learn_base):
    model = setup.model
    traj = trajectories.SplineTrajectory(cmap=setup.cmap, control=control, t_start=setup.t_start, t_end=setup.t_end)
    shared = base * jnp.asarray(setup.free_base, base.dtype)[:, None] * learn_base
    params = BodyParams(jnp.exp(log_scales), site_offsets(model, setup.site_ids, shared + offsets))
    q = traj(times)
    pts = trajectories.markers_along(model, params, q, setup.marker_set)
    r = losses.reprojection_residuals(rig, pts, keypoints, confidence, setup.delta_px)
    prior = setup.offset_weight * jnp.sum(offsets**2)
    prior = prior + setup.scale_weight * jnp.sum(log_scales[np.flatnonzero(setup.scale_prior)] ** 2)
    return losses.sum_of_squares(r) / times.shape[0] + 0.5 * prior


def _population_loss(v: PopulationVariables, key, setup: _PopSetup, data, learn_base, batch_size: int):
    """The mean subject loss over ``batch_size`` subjects drawn with ``key`` (among the
    ``setup.subjects`` real ones), plus the base's prior. The minibatch is split over the
    devices of ``setup.split``; its ``setup.batch_pad`` padding places (subject 0) are left out
    of the mean."""
    rigs, keypoints, confidence, times = data
    batch = jax.random.choice(key, setup.subjects, (batch_size,), replace=False)
    if setup.batch_pad:
        batch = jnp.concatenate([batch, jnp.zeros(setup.batch_pad, batch.dtype)])
    take = lambda x: jax.lax.with_sharding_constraint(jnp.take(x, batch, axis=0), setup.split)
    per = jax.vmap(_subject_loss, in_axes=(None, None, 0, 0, 0, 0, 0, 0, None, None))(
        setup, v.base, take(v.control), take(v.log_scales), take(v.offsets),
        jax.tree_util.tree_map(take, rigs), take(keypoints), take(confidence), times, learn_base,
    )
    return jnp.mean(per[:batch_size]) + 0.5 * setup.base_weight * jnp.sum(v.base**2)


def subject_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """The 1-D mesh (axis ``"subjects"``) over ``devices`` (default: all of ``jax.devices()``)."""
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise InputError("devices: expected at least one jax.Device, got none")
    wrong = [d for d in devices if not isinstance(d, jax.Device)]
    if wrong:
        raise InputError(f"devices: expected jax.Device objects (from jax.devices()), got {wrong[0]!r}")
    if len(set(devices)) != len(devices):
        raise InputError(f"devices: each device may appear once, got {devices}")
    return Mesh(np.asarray(devices), (SUBJECTS,))


def _padded(x: np.ndarray, size: int) -> np.ndarray:
    """``x`` with copies of its first row appended along axis 0 up to ``size`` rows."""
    return np.concatenate([x, np.repeat(x[:1], size - x.shape[0], axis=0)])


def fit_population(
    model,
    subjects: Sequence[tuple[Capture | Sequence[Capture], CameraRig]],
    marker_set: str,
    steps: int = 3000,
    batch_size: int = 4,
    lr: float = 3e-2,
    anchored: Sequence[str] | None = None,
    learn_base: bool = True,
    knots_per_second: float = 12.0,
    huber_delta_px: float = 10.0,
    offset_weight: float = 30.0,
    base_weight: float = 0.01,
    scale_weight: float = 1.0,
    seed: int = 0,
    progress: Progress | None = None,
    dtype=None,
    devices: Sequence[jax.Device] | None = None,
) -> PopulationResult:
    """Fit many subjects at once with shared base marker offsets.

    Args:
        subjects: per subject ``(capture, rig)``: one trial each (a one-element list is
            accepted); every trial must have the same cameras count, frames, fps and start time
            (slice or pad them), so that subjects stack.
        batch_size: subjects per step; must be smaller than the population.
        anchored: keypoint names whose base offset stays 0 (default: those containing "heel"
            or "hee").
        learn_base: False fits every subject alone (the base stays 0): the baseline.
        offset_weight: prior weight per (1 cm)² of a subject's own offsets; base_weight: the
            same for the base (weak).
        progress: ``progress("population", done, total, info)`` (see :mod:`mjx_biomech.fitting.fit`).
        devices: the devices the subjects are split over (default: all of ``jax.devices()``);
            population and minibatch are padded to multiples of their number (see above).
        Other arguments as for :func:`mjx_biomech.fitting.fit.fit`; AdamW as there, its
        learning rate ``lr`` decaying 1000-fold over ``steps``.
    """
    S = len(subjects)
    if S < 2:
        raise InputError(f"subjects: a population needs at least 2 subjects, got {S}")
    if not 1 <= batch_size < S:
        raise InputError(f"batch_size: expected 1 <= batch_size < {S} (the population), got {batch_size}")
    dtype = dtype or jnp.result_type(float)
    mesh = subject_mesh(devices)
    n_dev = mesh.devices.size
    split, whole = NamedSharding(mesh, PartitionSpec(SUBJECTS)), NamedSharding(mesh, PartitionSpec())
    S_pad = -(-S // n_dev) * n_dev
    caps, rigs = [], []
    for i, (cap, rig) in enumerate(subjects):
        cap = cap[0] if isinstance(cap, (list, tuple)) and len(cap) == 1 else cap
        if not isinstance(cap, Capture):
            raise InputError(f"subjects[{i}]: expected one Capture per subject, got {type(cap).__name__}")
        caps.append(check_captures(model, [cap], rig, marker_set)[0])
        rigs.append(rig)
    first = caps[0]
    for i, cap in enumerate(caps):
        if (cap.num_frames, cap.num_cameras, cap.fps, cap.start_time) != (first.num_frames, first.num_cameras, first.fps, first.start_time):
            raise InputError(
                f"subjects[{i}]: {cap.num_cameras} cameras, {cap.num_frames} frames at {cap.fps} Hz from {cap.start_time} s; "
                f"expected those of subjects[0] ({first.num_cameras}, {first.num_frames}, {first.fps}, {first.start_time})"
            )
    names = model.marker_names(marker_set)
    if anchored is None:
        anchored = [n for n in names if "heel" in n.lower() or "hee" in n.lower()]
    unknown = [a for a in anchored if a not in names]
    if unknown:
        raise InputError(f"anchored: {unknown} are not keypoints of marker set {marker_set!r}")
    times = first.times
    active = trajectories.observed_coordinates(model, marker_set) | trajectories.root_coordinates(model)
    cmap = trajectories.coordinate_map(model, active=active)
    controls, log_scales = [], []
    P = len(model.scale_param_names)
    for cap, rig in zip(caps, rigs):
        guess = initialisation.initial_root(model, cap, rig, marker_set)
        sp = trajectories.spline_from_coords(cmap, times, trajectories.fill_missing(times, guess.coords), knots_per_second, dtype)
        controls.append(sp.control)
        ls = np.zeros(P)
        if "overall" in model.scale_param_names:
            ls[model.scale_param_names.index("overall")] = math.log(guess.scale)
        log_scales.append(ls)
    M = len(names)
    setup = _PopSetup(
        model=model, marker_set=marker_set, site_ids=tuple(int(i) for i in model.marker_site_ids(marker_set)), cmap=cmap,
        t_start=float(times[0]), t_end=float(times[-1]), free_base=tuple(n not in anchored for n in names),
        scale_prior=tuple(n != "overall" for n in model.scale_param_names), delta_px=float(huber_delta_px),
        offset_weight=float(offset_weight), base_weight=float(base_weight), scale_weight=float(scale_weight),
        subjects=S, batch_pad=-batch_size % n_dev, split=split,
    )
    subject_split = lambda x: jax.device_put(jnp.asarray(_padded(np.asarray(x), S_pad), dtype), split)
    v = PopulationVariables(
        base=jax.device_put(jnp.zeros((M, 3), dtype), whole), control=subject_split(np.stack(controls)),
        log_scales=subject_split(np.stack(log_scales)), offsets=subject_split(np.zeros((S, M, 3))),
    )
    stacked_rig = jax.tree_util.tree_map(lambda *x: subject_split(np.stack([np.asarray(a) for a in x])), *rigs)
    data = (stacked_rig, subject_split(np.stack([c.keypoints for c in caps])),
            subject_split(np.stack([c.confidence for c in caps])), jax.device_put(jnp.asarray(times, dtype), whole))
    opt_state = _OPTIMISER.init(v)
    rates = adam.learning_rates(adam.decay(lr, steps), steps)
    key = jax.random.PRNGKey(seed)
    history = []
    flag = jnp.asarray(1.0 if learn_base else 0.0, dtype)
    if progress is not None:
        progress(STAGE, 0, steps, {})
    for i in range(steps):
        lr_i = {"learning_rate": jnp.asarray(rates[i], dtype)}
        v, opt_state, loss, key = adam.step(_population_loss, _OPTIMISER, v, opt_state, lr_i, key, setup, data, flag, batch_size)
        history.append(loss)
        if progress is not None:
            progress(STAGE, i + 1, steps, {"loss": loss})
    base = np.asarray(v.base, float) * np.asarray(setup.free_base)[:, None] * float(learn_base)
    control, log_scales, own = (np.asarray(x) for x in (v.control, v.log_scales, v.offsets))
    params, coords = [], []
    for s in range(S):
        offsets = site_offsets(model, setup.site_ids, jnp.asarray(base + own[s].astype(float)))
        params.append(BodyParams(jnp.exp(jnp.asarray(log_scales[s])), offsets))
        traj = trajectories.SplineTrajectory(cmap=cmap, control=jnp.asarray(control[s]), t_start=setup.t_start, t_end=setup.t_end)
        coords.append(np.asarray(traj(jnp.asarray(times, dtype)), float))
    return PopulationResult(marker_set, base * OFFSET_UNIT_M, params, np.stack(coords), np.asarray(jnp.stack(history), float))
