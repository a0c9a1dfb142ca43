"""What a fit returns and its metrics. Writing a fit to a folder of OpenSim and MuJoCo files is
the converters' (:func:`converters.fit_output.save`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mjx_biomech.analysis import metrics
from mjx_biomech.body.params import BodyParams
from mjx_biomech.capture.cameras import CameraRig, extrinsic_difference
from mjx_biomech.capture.captures import Capture
from mjx_biomech.errors import InputError

# Joint angles compared with ground truth by default: the sagittal, frontal and transverse
# angles of the pelvis and legs that gait analysis reports.
GAIT_COORDINATES = (
    "pelvis_tilt", "pelvis_list", "pelvis_rotation",
    "hip_flexion_r", "hip_adduction_r", "hip_rotation_r", "knee_angle_r", "ankle_angle_r",
    "hip_flexion_l", "hip_adduction_l", "hip_rotation_l", "knee_angle_l", "ankle_angle_l",
)  # fmt: skip
GC_THRESHOLDS_PX = tuple(float(d) for d in np.arange(0.0, 20.5, 0.5))


@dataclass(frozen=True)
class TrialResult:
    """One fitted trial: ``times`` (T,) s, ``coords`` (T, C) at the frames (radians/metres,
    ``model.coordinate_names`` order), the ``trajectory`` (callable at any time) and the
    ``capture`` in the rig's camera order."""

    name: str
    times: np.ndarray
    coords: np.ndarray
    trajectory: Any
    capture: Capture


@dataclass(frozen=True)
class FitResult:
    """A fit: per-trial results, the person's :class:`BodyParams`, the refined rig (equal to
    ``initial_rig`` without bundle adjustment), the loss per step, the metrics
    (:func:`fit_metrics`) and the settings."""

    model: Any
    marker_set: str
    trials: tuple[TrialResult, ...]
    params: BodyParams
    rig: CameraRig
    initial_rig: CameraRig
    loss_history: np.ndarray
    metrics: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)

    def markers(self, trial: int = 0) -> np.ndarray:
        """(T, J, 3) model markers of the marker set at the trial's frames (m, world)."""
        return _markers(self.model, self.marker_set, self.params, self.trials[trial].coords)

    def reprojection_errors(self, trial: int = 0) -> np.ndarray:
        """(C, T, J) pixel distance between the projected model markers and the keypoints."""
        return _reprojection_errors(self.rig, self.markers(trial), self.trials[trial].capture)


def _markers(model, marker_set: str, params: BodyParams, coords: np.ndarray) -> np.ndarray:
    """(T, J, 3) markers of ``marker_set`` (m, world) at coordinates ``coords`` (T, C)."""
    from mjx_biomech.fitting.trajectories import markers_along

    params = jax.tree_util.tree_map(jnp.asarray, params)
    return np.asarray(markers_along(model, params, jnp.asarray(coords), marker_set), float)


def _reprojection_errors(rig: CameraRig, markers: np.ndarray, capture: Capture) -> np.ndarray:
    """(C, T, J) pixel distance between ``markers`` (T, J, 3) projected by ``rig`` and the keypoints."""
    return np.asarray(metrics.reprojection_errors(rig, markers, np.nan_to_num(capture.keypoints)), float)


def fit_metrics(
    model,
    marker_set: str,
    params: BodyParams,
    rig: CameraRig,
    trials: Sequence[TrialResult],
    loss_history: np.ndarray,
    left_right_relabelled: dict[str, dict[str, int]] | None = None,
) -> dict:
    """Reprojection metrics against the keypoints of the fitted ``trials`` (markers of
    ``marker_set`` on ``model`` with ``params``, projected by ``rig``): GC_5, σ_NIQR and median
    error (px) over all trials; per trial the GC_d curve, per-camera mean and median error (px)
    and GC_5, σ_NIQR of the errors and, if given, ``left_right_relabelled`` (trial name →
    camera name → detections exchanged); ``final_loss``, the last of ``loss_history``."""
    out: dict[str, Any] = {"trials": {}}
    all_err, all_conf = [], []
    for trial in trials:
        err = _reprojection_errors(rig, _markers(model, marker_set, params, trial.coords), trial.capture)
        conf = trial.capture.confidence
        seen = conf > 0
        all_err.append(err[seen])
        all_conf.append(conf[seen])
        per_cam = {}
        for c, name in enumerate(rig.names):
            e = err[c][seen[c]]
            per_cam[name] = {
                "mean_px": float(np.nanmean(e)) if e.size else None,
                "median_px": float(np.nanmedian(e)) if e.size else None,
                "gc5": metrics.gc_d(err[c], conf[c], 5.0),
            }
        out["trials"][trial.name] = {
            "gc5": metrics.gc_d(err, conf, 5.0),
            "gc_curve": dict(zip((f"{d:g}" for d in GC_THRESHOLDS_PX), map(float, metrics.gc_curve(err, conf, GC_THRESHOLDS_PX)))),
            "sigma_niqr_px": metrics.sigma_niqr(err[seen]),
            "median_px": float(np.nanmedian(err[seen])),
            "per_camera": per_cam,
        }
        if left_right_relabelled is not None:
            out["trials"][trial.name]["left_right_relabelled"] = dict(left_right_relabelled[trial.name])
    e, c = np.concatenate(all_err), np.concatenate(all_conf)
    out["gc5"] = metrics.gc_d(e, c, 5.0)
    out["sigma_niqr_px"] = metrics.sigma_niqr(e)
    out["median_px"] = float(np.nanmedian(e))
    out["final_loss"] = float(loss_history[-1]) if len(loss_history) else None
    return out


def truth_metrics(
    result: FitResult,
    params: BodyParams,
    coords: Sequence[np.ndarray] | np.ndarray,
    rig: CameraRig | None = None,
    skip_seconds: float = 0.5,
    joints: Sequence[str] = GAIT_COORDINATES,
) -> dict:
    """Errors against known ground truth (synthetic data).

    - ``scale_error_max_pct``: the largest relative error of any body's effective scale
      (``model.body_scales``, the product of its groups: what the data determine), percent;
    - ``joint_rmse_deg``: RMSE over ``joints`` (those the model has) and frames after
      ``skip_seconds``, degrees; ``joint_rmse_by_coordinate_deg`` per joint;
    - ``offset_error_mm``: mean distance between fitted and true offsets of the marker set;
    - with ``rig``: ``extrinsic_error_deg`` and ``extrinsic_error_mm``, the largest camera
      rotation and centre errors of the refined rig, and of the rig the fit started from.
    """
    model = result.model
    if isinstance(coords, np.ndarray) and coords.ndim == 2:
        coords = [coords]
    if len(coords) != len(result.trials):
        raise InputError(f"coords: expected one (T, C) array per trial ({len(result.trials)}), got {len(coords)}")
    true_b = np.asarray(model.body_scales(jnp.asarray(params.scales)), float)[1:]
    fit_b = np.asarray(model.body_scales(jnp.asarray(result.params.scales)), float)[1:]
    out: dict[str, Any] = {"scale_error_max_pct": float(np.max(np.abs(fit_b / true_b - 1)) * 100)}
    names = model.coordinate_names
    idx = [names.index(j) for j in joints if j in names]
    diffs = []
    for trial, truth in zip(result.trials, coords):
        truth = np.asarray(truth, float)
        if truth.shape != trial.coords.shape:
            raise InputError(f"coords for trial {trial.name!r}: expected shape {trial.coords.shape}, got {truth.shape}")
        keep = trial.times >= trial.times[0] + skip_seconds
        diffs.append(np.degrees(trial.coords[keep][:, idx] - truth[keep][:, idx]))
    d = np.concatenate(diffs)
    out["joint_rmse_deg"] = float(np.sqrt(np.mean(d**2)))
    out["joint_rmse_by_coordinate_deg"] = {names[i]: float(np.sqrt(np.mean(d[:, k] ** 2))) for k, i in enumerate(idx)}
    ids = model.marker_site_ids(result.marker_set)
    off = np.linalg.norm(np.asarray(result.params.offsets)[ids] - np.asarray(params.offsets)[ids], axis=1)
    out["offset_error_mm"] = float(np.mean(off) * 1000)
    if rig is not None:
        ang, dist = extrinsic_difference(rig, result.rig)
        ang0, dist0 = extrinsic_difference(rig, result.initial_rig)
        out.update(
            extrinsic_error_deg=float(np.max(ang)),
            extrinsic_error_mm=float(np.max(dist) * 1000),
            initial_extrinsic_error_deg=float(np.max(ang0)),
            initial_extrinsic_error_mm=float(np.max(dist0) * 1000),
        )
    return out


def file_stem(name: str, index: int = 0) -> str:
    """A trial's name as a file-name stem (letters, digits, ``-_.``; other characters -> ``_``);
    ``trial<index + 1>`` when nothing is left."""
    stem = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name).strip("._")
    return stem or f"trial{index + 1}"
