"""Evaluation metrics: reprojection (GC_d), robust spread, RMSE, gait events and spatiotemporal
gait parameters, event matching and Bland–Altman agreement.

Everything here is computed on arrays with NumPy (float64), except :func:`reprojection_errors`,
which is JAX so that it also serves inside jitted code. Heights and positions are metres in a
Z-up world unless ``up_axis`` says otherwise; times are seconds.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import linear_sum_assignment

from mjx_biomech.capture.cameras import CameraRig
from mjx_biomech.capture.projection import project
from mjx_biomech.errors import InputError
from mjx_biomech.io import atomic_write

# Normal-consistency factor: for Gaussian data 0.7413·IQR estimates the standard deviation
# (1 / (2 Φ⁻¹(0.75)) = 0.7413).
_NIQR = 0.7413


def gc_d(errors_px, confidence, d: float = 5.0, min_confidence: float = 0.5) -> float:
    """GC_d: the fraction of confident keypoints whose reprojection error is at most ``d`` px.

    ``GC_d = #{conf ≥ min_confidence and err ≤ d} / #{conf ≥ min_confidence}`` over every
    element of ``errors_px`` and ``confidence`` (same shape). A confident keypoint with a NaN
    error (e.g. a point behind the camera) counts as a miss. NaN when nothing is confident.
    """
    return float(gc_curve(errors_px, confidence, [d], min_confidence)[0])


def gc_curve(errors_px, confidence, ds, min_confidence: float = 0.5) -> np.ndarray:
    """GC_d (see :func:`gc_d`) for every threshold in ``ds`` (px): shape (len(ds),)."""
    err = np.asarray(errors_px, dtype=float)
    conf = np.asarray(confidence, dtype=float)
    if err.shape != conf.shape:
        raise InputError(f"confidence: expected the shape of errors_px {err.shape}, got {conf.shape}")
    confident = conf >= min_confidence
    n = np.count_nonzero(confident)
    ds = np.asarray(ds, dtype=float)
    if n == 0:
        return np.full(ds.shape, np.nan)
    e = err[confident]
    e = np.where(np.isfinite(e), e, np.inf)
    return np.array([np.count_nonzero(e <= d) / n for d in ds.ravel()]).reshape(ds.shape)


def sigma_niqr(x) -> float:
    """σ_NIQR = 0.7413 · (Q₇₅ − Q₂₅) of the finite values of ``x``: a spread robust to outliers
    that equals the standard deviation for Gaussian data."""
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan")
    q25, q75 = np.percentile(x, [25, 75])
    return float(_NIQR * (q75 - q25))


def rmse(a, b, axis=None):
    """Root mean square of ``a − b`` over ``axis`` (all elements by default); NaN propagates."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    return np.sqrt(np.mean(d**2, axis=axis))


def bias_removed_rmse(a, b, axis=None):
    """RMSE after removing the mean difference: ``sqrt(mean((d − mean d)²))`` with ``d = a − b``.

    It measures the shape error of a curve (e.g. a joint angle) regardless of a constant offset.
    """
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    return np.sqrt(np.mean((d - np.mean(d, axis=axis, keepdims=True)) ** 2, axis=axis))


def reprojection_errors(rig: CameraRig, points3d, keypoints) -> jax.Array:
    """Pixel distance (C, T, J) between projected ``points3d`` (T, J, 3) m and ``keypoints``
    (C, T, J, 2) px. NaN where the keypoint is NaN or the point is behind the camera."""
    kp = jnp.asarray(keypoints)
    uv, depth = project(rig, points3d, return_depth=True)
    if uv.shape != kp.shape:
        raise InputError(f"keypoints: expected shape {uv.shape} (cameras, points3d shape, 2), got {kp.shape}")
    err = jnp.linalg.norm(uv - kp, axis=-1)
    return jnp.where(depth > 0, err, jnp.nan)


class GaitEvents(NamedTuple):
    """Foot-contact events of one foot: frame indices (int) and times (s), and the contact state."""

    strike_frames: np.ndarray
    off_frames: np.ndarray
    strike_times: np.ndarray
    off_times: np.ndarray
    contact: np.ndarray


def gait_events(
    heel_z, toe_z, fps: float, threshold: float = 0.03, hysteresis: float = 0.01, min_contact: float = 0.0
) -> GaitEvents:
    """Foot strikes and foot offs of one foot from heel and toe heights (T,) m.

    The foot's height is the lower of heel and toe (``toe_z`` may be None). It is in contact
    from the frame its height drops below ``threshold`` until the frame it rises above
    ``threshold + hysteresis``; the band in between keeps the previous state, so noise near the
    threshold does not make spurious events. With ``threshold`` = 0 contact means penetrating
    the ground (z < 0), as for a simulated body. A contact that ends after fewer than
    ``min_contact`` seconds (a swinging foot scuffing the floor) is not a stance: it makes no
    events (a contact still going on at the last frame is kept). A foot strike is the first
    frame of a contact, a foot off the first frame after one; the state at frame 0 makes no event.
    """
    if hysteresis < 0:
        raise InputError(f"hysteresis: expected ≥ 0 m, got {hysteresis}")
    if not (np.isfinite(min_contact) and min_contact >= 0):
        raise InputError(f"min_contact: expected ≥ 0 s, got {min_contact}")
    _check_fps(fps)
    heel = np.asarray(heel_z, dtype=float)
    height = heel if toe_z is None else np.fmin(heel, np.asarray(toe_z, dtype=float))
    if height.ndim != 1:
        raise InputError(f"heel_z: expected shape (frames,), got {heel.shape}")
    contact = np.zeros(height.shape, dtype=bool)
    state = bool(height[0] < threshold) if height.size else False
    for t, h in enumerate(height):
        if state and h > threshold + hysteresis:
            state = False
        elif not state and h < threshold:
            state = True
        contact[t] = state
    change = np.diff(contact.astype(int))
    for start in np.flatnonzero(change == 1) + 1:
        ends = np.flatnonzero(~contact[start:])
        if ends.size and ends[0] < min_contact * fps:
            contact[start : start + ends[0]] = False
    change = np.diff(contact.astype(int))
    strikes = np.flatnonzero(change == 1) + 1
    offs = np.flatnonzero(change == -1) + 1
    return GaitEvents(strikes, offs, strikes / fps, offs / fps, contact)


class StepMetrics(NamedTuple):
    """Spatial gait parameters, in metres. Steps are listed in time order; ``step_side`` is the
    foot that struck ("left"/"right"). A stride runs between two strikes of one foot and is listed
    at its first strike."""

    step_frames: np.ndarray
    step_side: np.ndarray
    step_length: np.ndarray
    step_width: np.ndarray
    stride_frames: np.ndarray
    stride_side: np.ndarray
    stride_length: np.ndarray
    direction: np.ndarray


def _check_fps(fps: float) -> None:
    if not (np.isfinite(fps) and fps > 0):
        raise InputError(f"fps: expected a positive frame rate in Hz, got {fps}")


def _unit_direction(direction) -> np.ndarray:
    """``direction`` (2,) scaled to unit length."""
    d = np.asarray(direction, dtype=float)
    norm = np.linalg.norm(d) if d.shape == (2,) else 0.0
    if not (np.isfinite(norm) and norm > 0):
        raise InputError(f"direction: expected a non-zero horizontal vector (2,), got {np.asarray(direction).tolist()}")
    return d / norm


def _horizontal(x, up_axis: int) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    return np.delete(x, up_axis, axis=-1)


def walking_direction(trajectory, up_axis: int = 2) -> np.ndarray:
    """Unit horizontal (2,) direction of travel of a trajectory (T, 3) m: the principal axis of
    its horizontal positions, signed along the net displacement."""
    xy = _horizontal(trajectory, up_axis)
    xy = xy[np.all(np.isfinite(xy), axis=-1)]
    if len(xy) < 2:
        raise InputError("trajectory: expected at least 2 finite positions to find the walking direction")
    net = xy[-1] - xy[0]
    if np.linalg.norm(net) < 1e-3:
        raise InputError(
            "trajectory: the subject does not travel (treadmill?); pass the walking direction explicitly"
        )
    _, _, vt = np.linalg.svd(xy - xy.mean(axis=0), full_matrices=False)
    axis = vt[0]
    return axis if axis @ net > 0 else -axis


def step_metrics(
    heel_left, heel_right, strikes_left, strikes_right, pelvis=None, direction=None, up_axis: int = 2
) -> StepMetrics:
    """Step length, step width and stride length from heel positions (T, 3) m at foot strikes.

    At a strike of foot A at frame f, with ``d`` the horizontal vector from the other heel to
    A's heel: step length = d · direction, step width = |d · lateral| (lateral ⟂ direction,
    horizontal). Stride length is the displacement of A's heel between consecutive strikes of A
    along the direction. The walking direction is ``direction`` (horizontal (2,) vector) when
    given, else that of ``pelvis`` (T, 3), else that of the heels' midpoint. On a treadmill the
    body does not travel: pass ``direction``; step length and width stay meaningful, but stride
    length then measures heel displacement over the ground, not the belt's travel.
    """
    hl, hr = _horizontal(heel_left, up_axis), _horizontal(heel_right, up_axis)
    if hl.shape != hr.shape or hl.ndim != 2:
        raise InputError(
            "heel_left, heel_right: expected equal shapes (frames, 3), "
            f"got {np.shape(heel_left)} and {np.shape(heel_right)}"
        )
    if direction is None:
        source = pelvis if pelvis is not None else (np.asarray(heel_left, float) + np.asarray(heel_right, float)) / 2
        direction = walking_direction(source, up_axis)
    direction = _unit_direction(direction)
    lateral = np.array([-direction[1], direction[0]])
    heels = {"left": (hl, hr, np.asarray(strikes_left, int)), "right": (hr, hl, np.asarray(strikes_right, int))}
    steps, strides = [], []
    for side, (own, other, frames) in heels.items():
        for f in frames:
            d = own[f] - other[f]
            steps.append((f, side, d @ direction, abs(d @ lateral)))
        for f0, f1 in zip(frames, frames[1:]):
            strides.append((f0, side, (own[f1] - own[f0]) @ direction))
    steps.sort(key=lambda s: s[0])
    strides.sort(key=lambda s: s[0])
    col = lambda rows, i, dtype: np.array([r[i] for r in rows], dtype=dtype)  # noqa: E731
    return StepMetrics(
        step_frames=col(steps, 0, int),
        step_side=col(steps, 1, object).astype(str),
        step_length=col(steps, 2, float),
        step_width=col(steps, 3, float),
        stride_frames=col(strides, 0, int),
        stride_side=col(strides, 1, object).astype(str),
        stride_length=col(strides, 2, float),
        direction=direction,
    )


def walking_speed_per_cycle(position, strikes, fps: float, direction=None, up_axis: int = 2) -> np.ndarray:
    """Mean walking speed (K − 1,) m/s over each gait cycle between consecutive ``strikes``
    (frames of one foot), from a body position (T, 3) m such as the pelvis: horizontal
    displacement (along ``direction`` when given) divided by the cycle's duration."""
    _check_fps(fps)
    xy = _horizontal(position, up_axis)
    strikes = np.asarray(strikes, dtype=int)
    disp = xy[strikes[1:]] - xy[strikes[:-1]]
    if direction is None:
        dist = np.linalg.norm(disp, axis=-1)
    else:
        dist = disp @ _unit_direction(direction)
    return dist / (np.diff(strikes) / fps)


class EventMatch(NamedTuple):
    """Matched event pairs (indices into the inputs), their timing errors ``pred − ref`` (s), and
    the indices of predicted and reference events left unmatched."""

    pred_index: np.ndarray
    ref_index: np.ndarray
    errors: np.ndarray
    unmatched_pred: np.ndarray
    unmatched_ref: np.ndarray


def match_events(pred_times, ref_times, max_offset: float = 0.5) -> EventMatch:
    """Pair predicted with reference event times (s) one to one by the Hungarian algorithm.

    The assignment first maximises the number of pairs within ``max_offset`` s, then minimises
    their summed absolute timing error; pairs further apart than ``max_offset`` are dropped.
    """
    if not max_offset >= 0:
        raise InputError(f"max_offset: expected ≥ 0 s, got {max_offset}")
    p = np.asarray(pred_times, dtype=float).ravel()
    r = np.asarray(ref_times, dtype=float).ravel()
    cost = np.abs(p[:, None] - r[None, :])
    # A too-far pair costs more than any set of admissible pairs, so it is only used when
    # nothing admissible is left; it is dropped below.
    too_far = cost > max_offset
    cost = np.where(too_far, (len(p) + len(r) + 1) * max_offset + 1.0, cost)
    rows, cols = linear_sum_assignment(cost)
    ok = ~too_far[rows, cols]
    rows, cols = rows[ok], cols[ok]
    return EventMatch(
        pred_index=rows,
        ref_index=cols,
        errors=p[rows] - r[cols],
        unmatched_pred=np.setdiff1d(np.arange(len(p)), rows),
        unmatched_ref=np.setdiff1d(np.arange(len(r)), cols),
    )


class BlandAltman(NamedTuple):
    """Agreement of two methods: bias = mean(a − b), sd = SD(a − b) (ddof 1), and the 95 %
    limits of agreement bias ± 1.96 sd."""

    bias: float
    sd: float
    lower: float
    upper: float


def bland_altman(a, b) -> BlandAltman:
    """Bland–Altman statistics of paired measurements ``a`` and ``b`` (same shape, ≥ 2 finite pairs)."""
    a, b = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    if a.shape != b.shape:
        raise InputError(f"a, b: expected paired measurements of equal size, got {a.size} and {b.size}")
    d = (a - b)[np.isfinite(a) & np.isfinite(b)]
    if d.size < 2:
        raise InputError(f"a, b: expected at least 2 finite pairs, got {d.size}")
    bias, sd = float(np.mean(d)), float(np.std(d, ddof=1))
    return BlandAltman(bias, sd, bias - 1.96 * sd, bias + 1.96 * sd)


def plot_bland_altman(a, b, path: str | os.PathLike, title: str = "", units: str = "") -> Path:
    """Write a Bland–Altman plot (difference a − b against the mean of a and b) as PNG, atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    stats = bland_altman(a, b)
    a, b = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    fig = Figure(figsize=(5, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.scatter((a + b) / 2, a - b, s=12)
    ax.axhline(stats.bias, color="k", label=f"bias {stats.bias:.3g}")
    for limit in (stats.lower, stats.upper):
        ax.axhline(limit, color="k", linestyle="--")
    unit = f" ({units})" if units else ""
    ax.set_xlabel(f"mean of the two{unit}")
    ax.set_ylabel(f"difference{unit}")
    ax.set_title(title or "Bland–Altman")
    ax.legend(loc="best")
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png")
    return Path(path)
