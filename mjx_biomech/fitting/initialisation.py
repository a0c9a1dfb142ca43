"""Where a fit starts: the root's pose per frame and the body's overall scale, from the keypoints.

:func:`initial_root` triangulates the keypoints robustly and matches the trunk's to the neutral
model frame by frame, rejecting outliers at every step, so that a fit needs no good guess and
missing or wrong detections do not send it off (a heading that winds by full turns, a body
placed metres away).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mjx_biomech.capture.cameras import CameraRig
from mjx_biomech.capture.captures import Capture
from mjx_biomech.capture.projection import project, triangulate_robust
from mjx_biomech.errors import InputError
from mjx_biomech.fitting.trajectories import _root_kinematics, fill_missing, root_coordinates


@dataclass(frozen=True)
class RootGuess:
    """Per-frame root pose and the overall scale of a trial, from triangulated keypoints.

    ``coords`` (T, C): root coordinates set (NaN in frames without enough keypoints), other
    coordinates neutral. ``scale``: overall body scale (1 = the model's size).
    """

    coords: np.ndarray
    scale: float


def _trunk_bodies(m) -> np.ndarray:
    """The root body and its children where the tree branches again (a torso carrying head and
    arms): bodies that move with the trunk rather than with a swinging limb."""
    root = int(np.flatnonzero(m.body_parentid == 0)[1]) if m.nbody > 1 else 0
    children = [b for b in range(1, m.nbody) if m.body_parentid[b] == root]
    branching = [b for b in children if np.count_nonzero(m.body_parentid == b) >= 2]
    return np.array([root] + branching, int)


def initial_root(model, capture: Capture, rig: CameraRig, marker_set: str) -> RootGuess:
    """Root pose per frame and overall scale from a robust triangulation of the keypoints.

    The triangulated keypoints on the trunk (:func:`_trunk_bodies`, and joint centres such as
    hips and shoulders; all keypoints if fewer than 3) of a frame are matched to the neutral
    model's markers by a similarity that turns only about the vertical (heading ψ, scale s,
    translation); the scale is the median over frames. The root's translational coordinates
    then put the root body where the match says, and its vertical-axis rotational coordinate
    takes ψ (the model's other root rotations stay neutral). Models without a floating root
    return neutral poses.

    The heading is that of the keypoints fixed in the root itself (the hips of a pelvis) where
    a frame has two of them, since a torso turns against the pelvis; the trunk's otherwise.

    Real detections are missing and wrong at random, so every step rejects outliers rather
    than averaging them in: a triangulated keypoint that its views miss by far is dropped
    (:func:`_triangulated`); within a frame, the worst-fitting keypoint is dropped while it
    misses by more than ``_POINT_OUTLIER`` of the trunk's size (and 3 are left); across frames,
    a frame whose scale, heading or position departs from the median of the frames around it
    is dropped. Headings are unwrapped only after that, so one wrong frame cannot add a full
    turn to all the frames after it. Each frame's heading and position are then the straight
    line through the kept frames within ``_SMOOTH_S`` of it (weighted by their keypoints' views),
    which also fills frames that were dropped; ``coords`` is NaN only where no kept frame is
    that close.
    """
    capture = capture.aligned_to(rig)
    names = model.marker_names(marker_set)
    if tuple(capture.keypoint_names) != tuple(names):
        raise InputError(
            f"capture {capture.name!r}: keypoints {capture.keypoint_names[:3]}... are not those of marker set "
            f"{marker_set!r} ({names[:3]}...): expected the set's {len(names)} keypoints in its order"
        )
    pts, views = _triangulated(rig, capture)  # (T, J, 3), (T, J)
    kin = _root_kinematics(model)
    neutral = model.neutral_coordinates()
    root = root_coordinates(model)
    p0, _, sites = kin(neutral)
    site_ids = model.marker_site_ids(marker_set)
    mm = model.mj_model
    body = mm.site_bodyid[site_ids]
    trunk_bodies = _trunk_bodies(mm)
    # Joint-centre keypoints (hips, shoulders) sit at the origin of a limb's first body and
    # move with the trunk.
    at_joint = np.isin(mm.body_parentid[body], trunk_bodies) & (np.linalg.norm(mm.site_pos[site_ids], axis=1) < 0.05)
    trunk = np.isin(body, trunk_bodies) | at_joint
    if trunk.sum() < 3:
        trunk[:] = True
    # Keypoints fixed in the root body itself (on it, or at the joint centres it carries, such as
    # the hips): the heading is the root's, which a turned torso's keypoints would bias.
    on_root = ((body == trunk_bodies[0]) | (at_joint & (mm.body_parentid[body] == trunk_bodies[0])))[trunk]
    a_all = sites[site_ids][trunk]
    pts, views = pts[:, trunk], views[:, trunk]
    T = pts.shape[0]
    coords = np.tile(neutral, (T, 1))
    if not root.any():
        return RootGuess(coords, 1.0)
    # Translation Jacobian of the root origin and the heading axis, by unit steps.
    trans = [i for i in np.flatnonzero(root) if model.coordinate_motion[i] == "translational"]
    rots = [i for i in np.flatnonzero(root) if model.coordinate_motion[i] == "rotational"]
    A = np.zeros((3, len(trans)))
    for k, i in enumerate(trans):
        q = neutral.copy()
        q[i] += 1.0
        A[:, k] = kin(q)[0] - p0
    yaw_coord, yaw_sign = None, 1.0
    best = 0.0
    _, R0, _ = kin(neutral)
    for i in rots:
        q = neutral.copy()
        q[i] += 0.1
        rel = kin(q)[1] @ R0.T
        yaw = math.atan2(rel[1, 0] - rel[0, 1], rel[0, 0] + rel[1, 1])
        if abs(yaw) > best:
            best, yaw_coord, yaw_sign = abs(yaw), i, math.copysign(1.0, yaw)
    size = float(np.max(np.linalg.norm(a_all - a_all.mean(0), axis=1)))
    # Per frame: the trunk's heading, scale and centroids, and the root keypoints' heading.
    trunk_psi, root_psi, scales = np.full(T, np.nan), np.full(T, np.nan), np.full(T, np.nan)
    # How much a frame's heading counts: its keypoints' fewest views beyond the 2 a point needs.
    weight = np.zeros(T)
    model_mean, data_mean = np.full((T, 3), np.nan), np.full((T, 3), np.nan)
    for f in range(T):
        keep = np.all(np.isfinite(pts[f]), axis=1)
        if keep.sum() < 3:
            continue
        while True:
            psi, s, am, bm, miss = _heading_similarity(a_all[keep], pts[f, keep])
            worst = int(np.argmax(miss))
            if keep.sum() <= 3 or miss[worst] <= _POINT_OUTLIER * s * size:
                break
            keep[np.flatnonzero(keep)[worst]] = False
        trunk_psi[f], scales[f], model_mean[f], data_mean[f] = psi, s, am, bm
        weight[f] = views[f, keep].min() - 1
        pelvis = keep & on_root
        a = a_all[pelvis]
        if pelvis.sum() >= 2 and np.max(np.linalg.norm(a[:, :2] - a[:, :2].mean(0), axis=1)) >= _MIN_SPREAD_M:
            # The root's keypoints also place the root better than the trunk's centroid.
            root_psi[f], _, model_mean[f], data_mean[f], _ = _heading_similarity(a, pts[f, pelvis])
            weight[f] = views[f, pelvis].min() - 1
    placed = np.isfinite(trunk_psi) & (scales > 0)
    if not placed.any():
        raise InputError(f"capture {capture.name!r}: no frame has 3 keypoints seen by 2 cameras; cannot place the body")
    scale = float(np.median(scales[placed]))
    placed &= np.abs(np.log(np.where(placed, scales, 1.0) / scale)) <= _SCALE_OUTLIER
    window = max(2, round(_WINDOW_S * capture.fps))
    smooth = max(1, round(_SMOOTH_S * capture.fps))
    # The root's own keypoints give the heading where they were seen (a frame without them takes
    # its neighbours'); a torso turned against the pelvis would bias the trunk's heading.
    psis = root_psi if np.count_nonzero(np.isfinite(root_psi) & placed) >= 2 else trunk_psi
    turned = np.isfinite(psis) & placed
    turned &= _agrees_with_neighbours(np.stack([np.cos(psis), np.sin(psis)], 1), turned, window, _HEADING_OUTLIER, circular=True)
    if not turned.any():
        raise InputError(f"capture {capture.name!r}: no frame gives a consistent heading; cannot place the body")
    psis = np.where(turned, psis, 0.0)
    psis[turned] = np.unwrap(psis[turned])
    # Each frame takes the line through the kept frames around it (the outliers are gone): one
    # frame's few keypoints carry centimetres of noise, and a body turns and moves smoothly.
    heading = _local_line(psis[:, None], np.where(turned, weight, 0.0), smooth)[:, 0]
    heading = fill_missing(capture.times, heading[:, None])[:, 0]
    # The root origin, with the model scaled by the median scale about the matched centroid.
    origins = data_mean - scale * np.einsum("tij,tj->ti", _rot_z(heading), model_mean - p0)
    placed &= _agrees_with_neighbours(origins, placed, window, _POSITION_OUTLIER * scale * size)
    origins = _local_line(np.where(placed[:, None], origins, 0.0), placed.astype(float), smooth)
    located = np.all(np.isfinite(origins), axis=1)
    for f in np.flatnonzero(located):
        coords[f, trans] = neutral[trans] + np.linalg.lstsq(A, origins[f] - p0, rcond=None)[0]
        if yaw_coord is not None:
            coords[f, yaw_coord] = neutral[yaw_coord] + yaw_sign * heading[f]
    coords[np.ix_(~located, root)] = np.nan
    return RootGuess(coords, scale)


def _triangulated(rig: CameraRig, capture: Capture) -> tuple[np.ndarray, np.ndarray]:
    """(T, J, 3) robustly triangulated keypoints (m), NaN where fewer than 2 views agree, and
    (T, J) the number of views that made each. A point whose views miss it by more than
    ``_REPROJECTION_OUTLIER`` times the capture's median miss (at least
    ``_REPROJECTION_FLOOR_PX``) is dropped: two views cannot outvote each other, but a wrong
    one of them shows as a miss across the epipolar line."""
    pts, used = triangulate_robust(rig, capture.keypoints, capture.confidence)
    pts, used = np.array(pts, float), np.asarray(used, bool)
    uv = np.asarray(project(rig, pts), float)
    miss = np.where(used, np.linalg.norm(uv - np.nan_to_num(capture.keypoints), axis=-1), 0.0).max(axis=0)  # (T, J)
    ok = np.isfinite(pts).all(-1)
    if ok.any():
        limit = max(_REPROJECTION_FLOOR_PX, _REPROJECTION_OUTLIER * float(np.median(miss[ok])))
        pts[~(miss <= limit)] = np.nan
    return pts, used.sum(axis=0)


def _local_line(x: np.ndarray, weight: np.ndarray, half_width: int) -> np.ndarray:
    """(T, D): at every frame, the straight line through the rows of ``x`` (T, D) with ``weight``
    (T,) > 0 within ``half_width`` frames of it (weighted least squares), evaluated there: a
    smoothing that a steady motion passes unchanged, however the kept frames fall. NaN where
    fewer than 2 such frames are that close (1: its value)."""
    out = np.full(x.shape, np.nan)
    idx = np.flatnonzero(weight > 0)
    for f in range(len(x)):
        near = idx[np.abs(idx - f) <= half_width]
        if len(near) == 1:
            out[f] = x[near[0]]
        elif len(near) > 1:
            w = np.sqrt(weight[near])[:, None]
            A = np.stack([np.ones(len(near)), near - f], 1)
            out[f] = np.linalg.lstsq(w * A, w * x[near], rcond=None)[0][0]
    return out


# Outlier thresholds of :func:`initial_root`: a keypoint missing its trunk match by more than this
# fraction of the trunk's size; a frame's scale off the median by more than this (log); its
# heading off its neighbours' (rad); its position off theirs by this fraction of the trunk's
# size; neighbours within this many seconds.
_POINT_OUTLIER = 0.35
_SCALE_OUTLIER = 0.2
_HEADING_OUTLIER = math.radians(12.0)
_POSITION_OUTLIER = 0.5
_WINDOW_S = 0.15
# Root keypoints give the heading when they span at least this (m, horizontally, in the model);
# a frame's pose is the line through the kept frames within this many seconds of it.
_MIN_SPREAD_M = 0.05
_SMOOTH_S = 0.2
# A triangulated keypoint is dropped when a view misses it by more than this many times the
# capture's median miss, and at least this many pixels.
_REPROJECTION_OUTLIER = 4.0
_REPROJECTION_FLOOR_PX = 10.0


def _rot_z(psi) -> np.ndarray:
    """(..., 3, 3) rotations by ``psi`` (...) rad about the vertical."""
    c, s = np.cos(psi), np.sin(psi)
    z, o = np.zeros_like(c), np.ones_like(c)
    return np.stack([np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)], -2)


def _heading_similarity(a: np.ndarray, b: np.ndarray):
    """Least-squares similarity about the vertical taking model points ``a`` (N, 3) to data
    ``b`` (N, 3): ``(ψ, s, mean a, mean b, miss (N,))`` with ``b ≈ mean b + s R_z(ψ)(a − mean a)``
    and ``miss`` each point's distance from its match (m)."""
    am, bm = a.mean(0), b.mean(0)
    ac, bc = a - am, b - bm
    psi = math.atan2(np.sum(ac[:, 0] * bc[:, 1] - ac[:, 1] * bc[:, 0]), np.sum(ac[:, 0] * bc[:, 0] + ac[:, 1] * bc[:, 1]))
    ra = ac @ _rot_z(psi).T
    s = float(np.sum(ra * bc) / np.sum(ac * ac))
    return psi, s, am, bm, np.linalg.norm(s * ra - bc, axis=1)


def _agrees_with_neighbours(x: np.ndarray, good: np.ndarray, window: int, tolerance: float, circular: bool = False) -> np.ndarray:
    """(T,) bool: the ``good`` rows of ``x`` (T, D) within ``tolerance`` of the median of the good
    rows within ``window`` frames of them (itself included). ``circular``: rows are unit vectors
    of angles, compared by angle (rad) with the circular median (the median angle about the
    neighbours' mean direction)."""
    out = np.zeros_like(good)
    idx = np.flatnonzero(good)
    for f in idx:
        near = idx[np.abs(idx - f) <= window]
        if circular:
            m = math.atan2(x[near, 1].sum(), x[near, 0].sum())
            angles = np.angle((x[near, 0] + 1j * x[near, 1]) * np.exp(-1j * m))
            own = np.angle((x[f, 0] + 1j * x[f, 1]) * np.exp(-1j * m))
            out[f] = abs(np.angle(np.exp(1j * (own - np.median(angles))))) <= tolerance
        else:
            out[f] = np.linalg.norm(x[f] - np.median(x[near], axis=0)) <= tolerance
    return out
