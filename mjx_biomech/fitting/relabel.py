"""Repairing a 2D detector's labels with the fitted model: left/right swaps and the wrong person.

Detectors exchange the left and right keypoints of a mirror pair (``left_knee``/``right_knee``,
...) when a person faces away or the legs cross, per camera and frame. The fitted model's
projection says which labelling fits: where the two detections of a pair lie closer to the
model's markers exchanged than as given, by more than a threshold, they are exchanged back.

A detector may also lock onto someone else (a therapist walking beside a patient) in one camera
for a while: that camera's detections in those frames miss the model by far more than any
other camera's, and are dropped (:func:`reject_views`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from mjx_biomech.capture.cameras import CameraRig
from mjx_biomech.capture.captures import Capture
from mjx_biomech.capture.projection import project
from mjx_biomech.fitting import losses, trajectories
from mjx_biomech.fitting.variables import FitSetup, FitVariables, TrialArrays
from mjx_biomech.program_cache import cached_jit


@dataclass(frozen=True)
class Relabel:
    """When and how to relabel: mirror ``pairs`` (K, 2) of keypoint indices, the threshold
    (px) and the Adam steps at which it runs."""

    pairs: np.ndarray
    threshold_px: float
    at_steps: frozenset


@cached_jit
def left_right_swaps(v: FitVariables, setup: FitSetup, rig: CameraRig, trials, ba_on, pairs, threshold_px: float) -> list:
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


def exchange(trial: TrialArrays, swap, pairs) -> TrialArrays:
    """``trial`` with the keypoints and confidences of each pair (``pairs`` (K, 2)) exchanged
    where ``swap`` (C, T, K)."""
    perm_a = jnp.asarray(pairs[:, 0])
    perm_b = jnp.asarray(pairs[:, 1])

    def apply(x, extra_dims):
        s = swap.reshape(swap.shape + (1,) * extra_dims)
        xa, xb = x[:, :, perm_a], x[:, :, perm_b]
        return x.at[:, :, perm_a].set(jnp.where(s, xb, xa)).at[:, :, perm_b].set(jnp.where(s, xa, xb))

    return TrialArrays(apply(trial.keypoints, 1), apply(trial.confidence, 0), trial.times)


def exchanged_capture(capture: Capture, swap: np.ndarray, pairs: np.ndarray) -> Capture:
    """``capture`` with the keypoints and confidences of each mirror pair (``pairs`` (K, 2))
    exchanged where ``swap`` (C, T, K) (NumPy, at the capture's precision): the detections as
    the fit labelled them. ``capture`` itself when nothing is exchanged."""
    if len(pairs) == 0 or not np.any(swap):
        return capture
    a, b = pairs[:, 0], pairs[:, 1]
    kp, conf = capture.keypoints.copy(), capture.confidence.copy()
    kp[:, :, a] = np.where(swap[..., None], capture.keypoints[:, :, b], capture.keypoints[:, :, a])
    kp[:, :, b] = np.where(swap[..., None], capture.keypoints[:, :, a], capture.keypoints[:, :, b])
    conf[:, :, a] = np.where(swap, capture.confidence[:, :, b], capture.confidence[:, :, a])
    conf[:, :, b] = np.where(swap, capture.confidence[:, :, a], capture.confidence[:, :, b])
    return dataclasses.replace(capture, keypoints=kp, confidence=conf)


@cached_jit
def view_errors(v: FitVariables, setup: FitSetup, rig: CameraRig, trials, ba_on) -> list:
    """Per trial, (C, T): the median reprojection error (px) of each camera's detections in each
    frame under the current model; NaN where a camera has none in a frame."""
    params = v.params(setup)
    r = v.rig(rig, ba_on)
    out = []
    for traj, t in zip(v.trajectories, trials):
        points = trajectories.markers_along(setup.model, params, traj(t.times), setup.marker_set)
        kp, w = losses.observation_weights(t.keypoints, t.confidence)
        err = jnp.where(w > 0, jnp.linalg.norm(project(r, points) - kp, axis=-1), jnp.nan)
        out.append(jnp.nanmedian(err, axis=-1))
    return out


def reject_views(v: FitVariables, setup: FitSetup, rig: CameraRig, trials, ba_on):
    """Drop (confidence 0) every camera's detections in the frames where their median error is
    above ``setup.reject_px`` and ``REJECT_FACTOR`` times the trial's median over cameras and
    frames: a detector that follows someone else, not a detection that is off. Returns
    ``(trials, dropped)``, ``dropped`` per trial (C, T) bool (the camera-frames dropped now)."""
    out, dropped = [], []
    for t, e in zip(trials, view_errors(v, setup, rig, trials, ba_on)):
        e = np.asarray(e, float)
        bad = np.zeros(e.shape, bool)
        if np.isfinite(e).any():
            bad = e > max(setup.reject_px, REJECT_FACTOR * float(np.nanmedian(e)))
        out.append(TrialArrays(t.keypoints, jnp.where(jnp.asarray(bad)[..., None], 0.0, t.confidence), t.times) if bad.any() else t)
        dropped.append(bad)
    return tuple(out), dropped


# A camera-frame is rejected when its median error is this many times the trial's typical one.
REJECT_FACTOR = 5.0


def relabel_left_right(v: FitVariables, setup: FitSetup, rig: CameraRig, trials, ba_on, pairs, swapped, threshold_px: float):
    """Exchange left/right detections that the model says a detector mixed up, then, when
    ``setup.reject_px`` > 0, drop the camera-frames that show someone else
    (:func:`reject_views`). ``swapped`` (per trial, (C, T, K) bool) accumulates which pairs now
    differ from the capture (none in a dropped camera-frame).

    Returns ``(trials, swapped)``."""
    if len(pairs):
        masks = left_right_swaps(v, setup, rig, trials, ba_on, pairs, threshold_px)
        trials = tuple(exchange(t, m, pairs) for t, m in zip(trials, masks))
        swapped = tuple(s ^ m for s, m in zip(swapped, masks))
    if setup.reject_px > 0:
        trials, dropped = reject_views(v, setup, rig, trials, ba_on)
        swapped = tuple(s & ~jnp.asarray(d)[..., None] for s, d in zip(swapped, dropped))
    return trials, swapped
