"""Reference gait for imitation: many trajectories of coordinates, stacked and padded, and the
tracking targets (keypoints, angles, velocities) the environments compare the body with.

Sources: an OpenSim .mot file (``converters.mot``), a fit result folder (every .mot inside), or
:func:`mjx_biomech.capture.synthetic.walking` (``"synthetic"`` or ``"synthetic:N"`` for N people).
Coordinates are matched to the simulated body by OpenSim name; columns the body lacks (the upper
body of a lower-body model) are ignored. Files are resampled to the control rate.

Each trajectory carries its person (:mod:`.people`): the :class:`~mjx_biomech.BodyParams` of the
simulated body that walks it, and that body's standing height, which scales the observations and
rewards. A synthetic walker is a random person (:func:`mjx_biomech.capture.synthetic.person`)
walking on their own feet; a fit result folder's person has the scales in its ``report.json``
and the marker sites of its ``model_scaled.xml``; a lone .mot file names no person (None: the
simulated body itself, or the given height).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np

from mjx_biomech.body.params import BodyParams
from mjx_biomech.errors import InputError

from . import people
from .body import Body
from .tracking import KEYPOINT_SET, KEYPOINTS, PELVIS_KEYPOINT, SAGITTAL_COORDINATES


@dataclass(frozen=True)
class Reference:
    """Trajectories of the body's coordinates at one frame rate.

    Attributes:
        coords: (N, T, C) rad/m in the body model's coordinate order; frames past a trajectory's
            length repeat its last frame.
        lengths: (N,) frames of each trajectory.
        fps: frames per second.
        names: (N,) a label per trajectory (file name or "synthetic:<seed>").
        heights: (N,) standing height of each trajectory's person, m.
        params: each trajectory's person on the simulated body, scales (N, P) and offsets
            (N, S, 3) (:mod:`.people`); None when no trajectory names its person (the simulated
            body itself walks them).
    """

    coords: np.ndarray
    lengths: np.ndarray
    fps: float
    names: tuple[str, ...]
    heights: np.ndarray
    params: BodyParams | None = None

    @property
    def num_trajectories(self) -> int:
        return int(self.coords.shape[0])

    def select(self, indices) -> Reference:
        """The trajectories at ``indices`` (e.g. a held-out split)."""
        idx = np.atleast_1d(np.asarray(indices, dtype=int))
        params = None if self.params is None else people.person(self.params, idx)
        return Reference(self.coords[idx], self.lengths[idx], self.fps, tuple(self.names[i] for i in idx), self.heights[idx], params)


def stack(
    trajectories: list[np.ndarray], fps: float, heights, names: list[str] | None = None, params: BodyParams | None = None
) -> Reference:
    """Stack (T_i, C) trajectories into a padded :class:`Reference`; ``heights`` (N,) or one
    value, m, are their people's standing heights, ``params`` their people (see :class:`Reference`)."""
    if not trajectories:
        raise InputError("reference: no trajectories given")
    heights = np.broadcast_to(np.asarray(heights, dtype=float), (len(trajectories),)).copy()
    if not np.all(np.isfinite(heights) & (heights > 0)):
        raise InputError(f"reference: standing heights must be positive metres, got {heights.tolist()}")
    c = trajectories[0].shape[1]
    for i, t in enumerate(trajectories):
        if t.ndim != 2 or t.shape[1] != c or t.shape[0] < 1:
            raise InputError(f"reference: trajectory {i} has shape {t.shape}; expected (frames ≥ 1, {c})")
    lengths = np.array([len(t) for t in trajectories], dtype=int)
    coords = np.stack([np.concatenate([t, np.repeat(t[-1:], lengths.max() - len(t), axis=0)]) for t in trajectories])
    names = names or [f"trajectory_{i}" for i in range(len(trajectories))]
    return Reference(coords.astype(float), lengths, float(fps), tuple(names), heights, params)


def _match_columns(body: Body, names: tuple[str, ...], values: np.ndarray, source: str) -> np.ndarray:
    model = body.model
    index = {n: i for i, n in enumerate(names)}
    missing = [c for c in model.coordinate_names if c not in index]
    if missing:
        raise InputError(f"{source}: no columns for the body's coordinates {missing}")
    return values[:, [index[c] for c in model.coordinate_names]]


def _resample(times: np.ndarray, values: np.ndarray, fps: float) -> np.ndarray:
    grid = times[0] + np.arange(int(np.floor((times[-1] - times[0]) * fps + 1e-9)) + 1) / fps
    return np.stack([np.interp(grid, times, values[:, j]) for j in range(values.shape[1])], axis=1)


def from_mot(paths, body: Body, fps: float, height: float | None = None, params: BodyParams | None = None) -> Reference:
    """One trajectory per .mot/.sto file, resampled to ``fps`` (linear interpolation); ``params``
    are their people (stacked, see :class:`Reference`), whose standing heights they give;
    without them the standing ``height`` (m) defaults to the body's."""
    from converters import mot

    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
    rotational = [n for n, m in zip(body.model.coordinate_names, body.model.coordinate_motion) if m == "rotational"]
    trajectories = []
    for path in paths:
        table = mot.read_mot(path)
        table = table.to_internal([n for n in table.names if n in rotational])
        trajectories.append(_resample(table.times, _match_columns(body, table.names, table.values, str(path)), fps))
    if params is not None:
        height = people.heights(body, params)
    return stack(trajectories, fps, body.height if height is None else height, [p.name for p in paths], params)


def from_fit_folder(folder, body: Body, fps: float) -> Reference:
    """Every .mot file in a fit result folder (``mjx-biomech fit`` and ``scale`` write
    ``<trial>.mot``), walked by the folder's person: the scale parameters of its ``report.json``
    (``scale_params``, or ``scales.parameters``) mapped onto the simulated body by name, and the
    marker sites of its ``model_scaled.xml`` (:func:`.people.params_from_scales`,
    :func:`.people.marker_offsets`). Without a report the person is unknown: the simulated body
    walks, with the standing height of ``model_scaled.xml`` if there is one."""
    folder = Path(folder)
    files = sorted(folder.glob("*.mot"))
    if not files:
        raise InputError(f"{folder}: no .mot file in this fit result folder")
    scaled, report = folder / "model_scaled.xml", folder / "report.json"
    person_model = None
    if scaled.exists():
        import mjx_biomech

        person_model = mjx_biomech.load_model(scaled)
    if not report.exists():
        return from_mot(files, body, fps, None if person_model is None else person_model.standing_height())
    try:
        content = json.loads(report.read_text())
        values = content["scale_params"] if "scale_params" in content else content["scales"]["parameters"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise InputError(f"{report}: expected JSON with 'scale_params' or 'scales.parameters' (name -> scale): {e}") from None
    if not isinstance(values, dict):
        raise InputError(f"{report}: the scale parameters must be an object of name -> scale")
    params = people.params_from_scales(body, values, str(report))
    if person_model is not None:
        params = params.replace(offsets=people.marker_offsets(body, params, person_model.mj_model))
    return from_mot(files, body, fps, params=people.stack([params] * len(files)))


# A synthetic walker's scale parameters (left and right tied): each 1 ± up to 6 %.
_PERSON_SCALE_RANGE = (0.0, 0.06)


def synthetic(body: Body, fps: float, num: int = 4, first_seed: int = 0, duration: float = 4.0, speed: float = 1.3) -> Reference:
    """``num`` synthetic walks with seeds ``first_seed`` … ``first_seed + num − 1``: people whose
    joint curves differ by a few percent (other seeds give held-out people), each with their
    own body (:func:`mjx_biomech.capture.synthetic.person` on the body's scale groups, left and
    right tied) and feet on the floor of it."""
    from mjx_biomech.capture import synthetic as synth

    seeds = range(first_seed, first_seed + num)
    tied = body.model.with_scale_groups(tie_left_right=True)
    persons, trajectories = [], []
    for s in seeds:
        # Its own random stream: the body does not follow the gait variation drawn from ``s``.
        drawn = synth.person(tied, seed=np.random.default_rng([s, 1]), scale_range=_PERSON_SCALE_RANGE)
        persons.append(people.params_from_scales(body, dict(zip(tied.scale_param_names, np.asarray(drawn.scales))), f"synthetic:seed{s}"))
        trajectories.append(synth.walking(body.model, duration=duration, fps=fps, speed=speed, seed=s, params=persons[-1])[1])
    params = people.stack(persons)
    return stack(trajectories, fps, people.heights(body, params), [f"synthetic:seed{s}" for s in seeds], params)


def load_reference(source, body: Body, fps: float) -> Reference:
    """A :class:`Reference` from ``"synthetic[:N[:FIRST_SEED]]"`` (default 4 walks from seed 0),
    a .mot/.sto file or a fit result folder."""
    if isinstance(source, Reference):
        return source
    if isinstance(source, str) and source.split(":")[0] == "synthetic":
        parts = source.split(":")
        try:
            num = int(parts[1]) if len(parts) > 1 else 4
            first = int(parts[2]) if len(parts) > 2 else 0
            if num < 1 or len(parts) > 3:
                raise ValueError
        except ValueError:
            raise InputError(f"reference: {source!r}; expected 'synthetic[:N[:FIRST_SEED]]' with integers, N ≥ 1") from None
        return synthetic(body, fps, num, first)
    path = Path(source)
    if path.is_dir():
        return from_fit_folder(path, body, fps)
    if path.suffix.lower() in (".mot", ".sto") and path.exists():
        return from_mot(path, body, fps)
    raise InputError(f"reference: {source!r} is not 'synthetic[:N[:FIRST_SEED]]', an existing .mot/.sto file or a fit result folder")


@dataclass(frozen=True)
class Targets:
    """What the environments track, per trajectory and frame (N, T, ...), computed with MuJoCo's
    C engine on the simulation model.

    Attributes:
        qpos (N, T, nq), qvel (N, T, nv): state of the reference (velocities by backward differences).
        keypoints (N, T, K, 3) m and keypoint_velocity (N, T, K, 3) m/s (backward differences).
        angles (N, T, J_a): sagittal joint angles, rad.
        pelvis_height (N, T): height of the pelvis body origin, m.
        lengths (N,): valid frames per trajectory; heights (N,): standing height of each person, m.
        keypoint_names (K,), keypoint_sites (K,) site ids, pelvis_keypoint: index of the pelvis in K.
        angle_qpos (J_a,): qpos addresses of the sagittal joints.
    """

    qpos: np.ndarray
    qvel: np.ndarray
    keypoints: np.ndarray
    keypoint_velocity: np.ndarray
    angles: np.ndarray
    pelvis_height: np.ndarray
    lengths: np.ndarray
    heights: np.ndarray
    keypoint_names: tuple[str, ...]
    keypoint_sites: np.ndarray
    pelvis_keypoint: int
    angle_qpos: np.ndarray


def keypoint_table(body: Body) -> tuple[tuple[str, ...], np.ndarray, int]:
    """(names, site ids, pelvis index) of the paper's 23 tracked keypoints (``tracking.KEYPOINTS``)."""
    model = body.model
    table = model.marker_sets.get(KEYPOINT_SET, {})
    missing = [n for n in KEYPOINTS if n not in table]
    if missing:
        raise InputError(f"model: {body.name}: its {KEYPOINT_SET} marker set lacks the tracked keypoints {missing}")
    names = KEYPOINTS
    sites = np.array([model.site_names.index(table[n]) for n in names], dtype=int)
    return names, sites, names.index(PELVIS_KEYPOINT)


def frames_needed(future_frames: int) -> int:
    """Frames a trajectory needs from an episode's start: the start, one step, and the
    ``future_frames`` observed ahead of it."""
    return future_frames + 2


def targets(reference: Reference, body: Body, future_frames: int, models: people.PersonModels | None = None) -> Targets:
    """Tracking targets of ``reference`` on ``body``; every trajectory must have at least
    :func:`frames_needed` frames. With ``models`` (:class:`.people.PersonModels` of ``body``),
    each trajectory's targets are those of its person's body (``reference.params``); without,
    of ``body`` itself."""
    need = frames_needed(future_frames)
    short = [(reference.names[i], int(n)) for i, n in enumerate(reference.lengths) if n < need]
    if short:
        raise InputError(
            f"reference: trajectories {short} (name, frames) are too short; with future_frames={future_frames} "
            f"each needs at least {need} frames"
        )
    if reference.coords.shape[-1] != body.model.num_coordinates:
        raise InputError(
            f"reference: {reference.coords.shape[-1]} coordinates per frame; the body has {body.model.num_coordinates}"
        )
    import jax

    model = body.model
    n, t, _ = reference.coords.shape
    params = people.identity(body, n) if models is None or reference.params is None else reference.params
    qpos = np.asarray(
        jax.vmap(lambda coords, s, o: jax.vmap(lambda q: model.coords_to_qpos(q, BodyParams(s, o)))(coords))(
            reference.coords, np.asarray(params.scales), np.asarray(params.offsets)
        )
    )
    names, sites, pelvis = keypoint_table(body)
    keypoints = np.empty((n, t, len(sites), 3))
    pelvis_height = np.empty((n, t))
    for i in range(n):
        m = body.mj_model if models is None else models(people.person(params, i))
        d = mujoco.MjData(m)
        for k in range(t):
            d.qpos[:] = qpos[i, k]
            mujoco.mj_kinematics(m, d)
            keypoints[i, k] = d.site_xpos[sites]
            pelvis_height[i, k] = d.xpos[body.pelvis_body, 2]
    m = body.mj_model
    qvel = np.empty((n, t, m.nv))
    for i in range(n):
        for k in range(t):
            mujoco.mj_differentiatePos(m, qvel[i, k], 1.0 / reference.fps, qpos[i, max(k - 1, 0)], qpos[i, k])
    qvel[:, 0] = qvel[:, 1]
    kvel = np.diff(keypoints, axis=1, prepend=keypoints[:, :1]) * reference.fps
    kvel[:, 0] = kvel[:, 1]
    angle_qpos = np.array([m.jnt_qposadr[m.joint(name).id] for name in SAGITTAL_COORDINATES], dtype=int)
    return Targets(
        qpos=qpos,
        qvel=qvel,
        keypoints=keypoints,
        keypoint_velocity=kvel,
        angles=qpos[..., angle_qpos],
        pelvis_height=pelvis_height,
        lengths=reference.lengths.copy(),
        heights=reference.heights.copy(),
        keypoint_names=names,
        keypoint_sites=sites,
        pelvis_keypoint=pelvis,
        angle_qpos=angle_qpos,
    )
