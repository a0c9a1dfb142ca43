"""What a fit returns, its metrics, and writing it to a folder.

``FitResult.save(folder)`` writes (atomically, never removing other files there):
``<trial>.mot`` (coordinates, OpenSim names, rotations in degrees), ``<trial>_markers.trc``
(model markers, OpenSim Y-up), ``model_scaled.xml`` (MuJoCo), ``model_scaled.osim``
(OpenSim, when the converter supports the model; otherwise a note in the report),
``calibration_refined.toml``, ``report.json`` (every metric) and ``plots/*.png``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mjx_biomech.analysis import metrics
from mjx_biomech.body.params import BodyParams
from mjx_biomech.capture.cameras import CameraRig, extrinsic_difference
from mjx_biomech.capture.captures import Capture
from mjx_biomech.errors import InputError
from mjx_biomech.io import write_text_atomic

# Joint angles compared with ground truth by default: the sagittal, frontal and transverse
# angles of the pelvis and legs that gait analysis reports.
GAIT_COORDINATES = (
    "pelvis_tilt", "pelvis_list", "pelvis_rotation",
    "hip_flexion_r", "hip_adduction_r", "hip_rotation_r", "knee_angle_r", "ankle_angle_r",
    "hip_flexion_l", "hip_adduction_l", "hip_rotation_l", "knee_angle_l", "ankle_angle_l",
)  # fmt: skip
GC_THRESHOLDS_PX = tuple(float(d) for d in np.arange(0.0, 20.5, 0.5))


@dataclass
class TrialResult:
    """One fitted trial: ``times`` (T,) s, ``coords`` (T, C) at the frames (radians/metres,
    ``model.coordinate_names`` order), the ``trajectory`` (callable at any time) and the
    ``capture`` in the rig's camera order."""

    name: str
    times: np.ndarray
    coords: np.ndarray
    trajectory: Any
    capture: Capture


@dataclass
class FitResult:
    """A fit: per-trial results, the person's :class:`BodyParams`, the refined rig (equal to
    ``initial_rig`` without bundle adjustment), the loss per step and the metrics."""

    model: Any
    marker_set: str
    trials: list[TrialResult]
    params: BodyParams
    rig: CameraRig
    initial_rig: CameraRig
    loss_history: np.ndarray
    metrics: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)

    def markers(self, trial: int = 0) -> np.ndarray:
        """(T, J, 3) model markers of the marker set at the trial's frames (m, world)."""
        from mjx_biomech.fitting.trajectories import markers_along

        params = jax.tree_util.tree_map(jnp.asarray, self.params)
        return np.asarray(markers_along(self.model, params, jnp.asarray(self.trials[trial].coords), self.marker_set), float)

    def reprojection_errors(self, trial: int = 0) -> np.ndarray:
        """(C, T, J) pixel distance between the projected model markers and the keypoints."""
        kp = self.trials[trial].capture.keypoints
        return np.asarray(metrics.reprojection_errors(self.rig, self.markers(trial), np.nan_to_num(kp)), float)

    def save(self, folder: str | os.PathLike, truth: dict | None = None) -> Path:
        """Write every output to ``folder`` (see the module docstring); ``truth`` (from
        :func:`truth_metrics`) is added to the report. Returns the folder."""
        return save(self, folder, truth)


def fit_metrics(result: FitResult) -> dict:
    """Reprojection metrics against the keypoints: GC_5 over all trials, and per trial the
    GC_d curve, per-camera mean and median error (px) and σ_NIQR of the errors."""
    out: dict[str, Any] = {"trials": {}}
    all_err, all_conf = [], []
    for i, trial in enumerate(result.trials):
        err = result.reprojection_errors(i)
        conf = trial.capture.confidence
        seen = conf > 0
        all_err.append(err[seen])
        all_conf.append(conf[seen])
        per_cam = {}
        for c, name in enumerate(result.rig.names):
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
    e, c = np.concatenate(all_err), np.concatenate(all_conf)
    out["gc5"] = metrics.gc_d(e, c, 5.0)
    out["sigma_niqr_px"] = metrics.sigma_niqr(e)
    out["median_px"] = float(np.nanmedian(e))
    out["final_loss"] = float(result.loss_history[-1]) if len(result.loss_history) else None
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


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if not np.isfinite(x) else float(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (jax.Array, np.ndarray)):
        return _jsonable(np.asarray(x).tolist())
    return x


def save(result: FitResult, folder: str | os.PathLike, truth: dict | None = None) -> Path:
    """See :meth:`FitResult.save`."""
    # Converters sit above the core; they are imported only to write files.
    from converters import mot, osim, trc
    from mjx_biomech.analysis import plots

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = result.model
    rotational = [m == "rotational" for m in model.coordinate_motion]
    files: dict[str, Any] = {"trials": {}}
    for i, trial in enumerate(result.trials):
        stem = _safe_stem(trial.name)
        mot_path = mot.write_mot(folder / f"{stem}.mot", trial.times, model.coordinate_names, trial.coords, rotational, name=stem)
        trc_path = trc.write_trc(
            folder / f"{stem}_markers.trc", trial.times, model.marker_names(result.marker_set), result.markers(i),
            z_up_input=True, data_rate=trial.capture.fps,
        )
        files["trials"][trial.name] = {"mot": mot_path.name, "trc": trc_path.name}
    files["model_mjcf"] = model.to_mjcf(result.params, folder / "model_scaled.xml").name
    osim_note = None
    try:
        files["model_osim"] = osim.export(model, result.params, folder / "model_scaled.osim").name
    except (NotImplementedError, InputError, ValueError, KeyError, ImportError) as e:
        osim_note = f"model_scaled.osim not written: converters.osim.export does not support this model ({type(e).__name__}: {e})"
    files["calibration"] = result.rig.to_toml(folder / "calibration_refined.toml").name
    files["plots"] = [p.name for p in plots.save_all(result, folder / "plots")]
    report = {
        "model": str(getattr(model, "source", "")),
        "marker_set": result.marker_set,
        "scale_params": dict(zip(model.scale_param_names, map(float, np.asarray(result.params.scales)))),
        "settings": result.settings,
        "metrics": result.metrics,
        "files": files,
    }
    if truth is not None:
        report["truth"] = truth
        report.update({k: v for k, v in truth.items() if not isinstance(v, dict)})
    report["gc5"] = result.metrics.get("gc5")
    if osim_note:
        report["notes"] = [osim_note]
    write_text_atomic(folder / "report.json", json.dumps(_jsonable(report), indent=2))
    return folder


def _safe_stem(name: str) -> str:
    stem = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name).strip("._")
    return stem or "trial"
