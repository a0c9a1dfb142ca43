"""Left/right relabelling: undoing a 2D detector's left/right swaps with the fitted model.

Detectors exchange the left and right keypoints of a mirror pair (``left_knee``/``right_knee``,
...) when a person faces away or the legs cross, per camera and frame. The fitted model's
projection says which labelling fits: where the two detections of a pair lie closer to the
model's markers exchanged than as given, by more than a threshold, they are exchanged back.
"""

from __future__ import annotations

from dataclasses import dataclass

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from mjx_biomech.capture.cameras import CameraRig
from mjx_biomech.capture.projection import project
from mjx_biomech.fitting import losses, trajectories
from mjx_biomech.fitting.variables import FitSetup, FitVariables, TrialArrays


@dataclass(frozen=True)
class Relabel:
    """When and how to relabel: mirror ``pairs`` (K, 2) of keypoint indices, the threshold
    (px) and the Adam steps at which it runs."""

    pairs: np.ndarray
    threshold_px: float
    at_steps: frozenset


@eqx.filter_jit
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


def relabel_left_right(v: FitVariables, setup: FitSetup, rig: CameraRig, trials, ba_on, pairs, swapped, threshold_px: float):
    """Exchange left/right detections that the model says a detector mixed up. ``swapped``
    (per trial, (C, T, K) bool) accumulates which pairs now differ from the capture.

    Returns ``(trials, swapped)``."""
    if len(pairs) == 0:
        return trials, swapped
    masks = left_right_swaps(v, setup, rig, trials, ba_on, pairs, threshold_px)
    trials = tuple(exchange(t, m, pairs) for t, m in zip(trials, masks))
    swapped = tuple(s ^ m for s, m in zip(swapped, masks))
    return trials, swapped
