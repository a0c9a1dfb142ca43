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
class FitUncertainty:
    """Standard errors of a fit (:func:`mjx_biomech.fitting.uncertainty.fit_uncertainty`).

    ``coordinate_std``: per trial (T, C), radians or metres (0 for coordinates the fit holds,
    NaN where no detection sees a coordinate); ``scale_sigma``: scale parameter -> standard
    error of the log of its bodies' scale (≈ relative); ``offset_sigma_m`` (M, 3) of the marker
    set's offsets; ``camera_sigma``: camera -> ``{"rotation_deg", "centre_mm"}`` (root of the
    summed variances of the rotation vector and the centre; None without bundle adjustment;
    the first camera and the second's distance to it fix the gauge and are exact);
    ``noise_px``: the estimated reprojection noise of a detection of confidence 1;
    ``residuals``, ``parameters``: the degrees of freedom; ``seconds``: the time taken.
    """

    coordinate_std: tuple[np.ndarray, ...]
    scale_sigma: dict
    offset_sigma_m: np.ndarray
    camera_sigma: dict | None
    noise_px: float
    residuals: int
    parameters: int
    seconds: float
    marker_names: tuple[str, ...] = ()

    @property
    def undetermined_scales(self) -> tuple[str, ...]:
        """Scale parameters whose σ exceeds :data:`~mjx_biomech.fitting.markers.SCALE_SIGMA_LIMIT`
        (relative): not determined by the data."""
        from mjx_biomech.fitting.markers import SCALE_SIGMA_LIMIT

        return tuple(n for n, s in self.scale_sigma.items() if not s <= SCALE_SIGMA_LIMIT)

    @property
    def undetermined_markers(self) -> tuple[str, ...]:
        """Markers with an offset component whose σ exceeds
        :data:`~mjx_biomech.fitting.markers.OFFSET_SIGMA_LIMIT_M`."""
        from mjx_biomech.fitting.markers import OFFSET_SIGMA_LIMIT_M

        return tuple(n for n, s in zip(self.marker_names, self.offset_sigma_m) if not np.all(s <= OFFSET_SIGMA_LIMIT_M))


@dataclass(frozen=True)
class TrialResult:
    """One fitted trial: ``times`` (T,) s, ``coords`` (T, C) at the frames (radians/metres,
    ``model.coordinate_names`` order), the ``trajectory`` (callable at any time), the
    ``capture`` in the rig's camera order and ``labelled``, the same detections with the
    left/right exchanges the fit made (None: as given); ``coords_std`` (T, C) the standard error
    of every coordinate at every frame (:class:`FitUncertainty`; None when not computed)."""

    name: str
    times: np.ndarray
    coords: np.ndarray
    trajectory: Any
    capture: Capture
    labelled: Capture | None = None
    coords_std: np.ndarray | None = None

    @property
    def scored(self) -> Capture:
        """The detections the fit is scored on: as the fit labelled them."""
        return self.capture if self.labelled is None else self.labelled

    def relabelled(self) -> np.ndarray:
        """(C, T, J) bool: detections the fit gave the other side's label."""
        if self.labelled is None:
            return np.zeros(self.capture.confidence.shape, bool)
        a, b = self.capture.keypoints, self.labelled.keypoints
        return np.any((a != b) & ~(np.isnan(a) & np.isnan(b)), axis=-1)


@dataclass(frozen=True)
class FitResult:
    """A fit: per-trial results, the person's :class:`BodyParams`, the refined rig (equal to
    ``initial_rig`` without bundle adjustment), the loss per step, the metrics
    (:func:`fit_metrics`), the settings and the standard errors (:class:`FitUncertainty`, None
    when not computed)."""

    model: Any
    marker_set: str
    trials: tuple[TrialResult, ...]
    params: BodyParams
    rig: CameraRig
    initial_rig: CameraRig
    loss_history: np.ndarray
    metrics: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    uncertainty: FitUncertainty | None = None

    def markers(self, trial: int = 0) -> np.ndarray:
        """(T, J, 3) model markers of the marker set at the trial's frames (m, world)."""
        return _markers(self.model, self.marker_set, self.params, self.trials[trial].coords)

    def reprojection_errors(self, trial: int = 0, rig: CameraRig | None = None) -> np.ndarray:
        """(C, T, J) pixel distance between the model markers projected by ``rig`` (default the
        refined one, :attr:`rig`) and the detections as the fit labelled them."""
        return _reprojection_errors(self.rig if rig is None else rig, self.markers(trial), self.trials[trial].scored)


def _markers(model, marker_set: str, params: BodyParams, coords: np.ndarray) -> np.ndarray:
    """(T, J, 3) markers of ``marker_set`` (m, world) at coordinates ``coords`` (T, C)."""
    from mjx_biomech.fitting.trajectories import markers_along

    params = jax.tree_util.tree_map(jnp.asarray, params)
    return np.asarray(markers_along(model, params, jnp.asarray(coords), marker_set), float)


def _reprojection_errors(rig: CameraRig, markers: np.ndarray, capture: Capture) -> np.ndarray:
    """(C, T, J) pixel distance between ``markers`` (T, J, 3) projected by ``rig`` and the keypoints."""
    return np.asarray(metrics.reprojection_errors(rig, markers, np.nan_to_num(capture.keypoints)), float)


# Every statistic of a fit counts the detections at least this confident (the GC_d of the
# markerless-biomechanics paper).
MIN_CONFIDENCE = 0.5


def reprojection_scores(errors: np.ndarray, confidence: np.ndarray, camera_names: Sequence[str]) -> dict:
    """GC_5, GC_10, median, mean and σ_NIQR (px) of ``errors`` (C, ...) over the detections with
    ``confidence`` (C, ...) ≥ :data:`MIN_CONFIDENCE`, their number, and the same per camera."""

    def stats(e, c):
        e = np.asarray(e, float)[np.asarray(c) >= MIN_CONFIDENCE]
        finite = e[np.isfinite(e)]
        return {
            "gc5": metrics.gc_d(e, np.ones_like(e), 5.0),
            "gc10": metrics.gc_d(e, np.ones_like(e), 10.0),
            "median_px": float(np.median(finite)) if finite.size else None,
            "mean_px": float(np.mean(finite)) if finite.size else None,
            "sigma_niqr_px": metrics.sigma_niqr(finite),
            "detections": int(e.size),
        }

    out = stats(errors, confidence)
    out["per_camera"] = {name: stats(errors[c], confidence[c]) for c, name in enumerate(camera_names)}
    return out


def fit_metrics(
    model,
    marker_set: str,
    params: BodyParams,
    rig: CameraRig,
    trials: Sequence[TrialResult],
    loss_history: np.ndarray,
    left_right_relabelled: dict[str, dict[str, int]] | None = None,
    original_rig: CameraRig | None = None,
    rejected: dict[str, dict[str, list[int]]] | None = None,
) -> dict:
    """Reprojection metrics of the fitted ``trials`` (markers of ``marker_set`` on ``model`` with
    ``params``) against the detections as the fit labelled them, every statistic over the
    detections with confidence ≥ :data:`MIN_CONFIDENCE` (:func:`reprojection_scores`).

    Through ``rig`` (the fit's cameras: refined by bundle adjustment, or as given) under the key
    ``"refined_calibration"`` when ``original_rig`` (the calibration as given) is passed, else
    ``"given_calibration"``; through ``original_rig`` under ``"given_calibration"`` too. The
    top-level ``gc5``, ``gc10``, ``median_px``, ``sigma_niqr_px`` (all trials) and, per trial,
    ``per_camera`` and the GC_d curve are those through ``rig``, named by ``"calibration"``.
    Per trial also: ``left_right_relabelled`` (camera → mirror pairs exchanged, if given) and
    ``detections_relabelled`` (camera → scored detections that carry the other side's label)
    and, if given, ``rejected_frames`` (camera → frames whose detections the fit dropped; they
    are scored all the same); ``final_loss``, the last of ``loss_history``.
    """
    rigs = {"refined_calibration" if original_rig is not None else "given_calibration": rig}
    if original_rig is not None:
        rigs["given_calibration"] = original_rig
    primary = next(iter(rigs))
    out: dict[str, Any] = {"calibration": primary, "min_confidence": MIN_CONFIDENCE, "trials": {}}
    pooled: dict[str, list] = {k: [] for k in rigs}
    confs = []
    for trial in trials:
        markers = _markers(model, marker_set, params, trial.coords)
        scored = trial.scored
        conf = scored.confidence
        confs.append(conf.ravel())
        entry: dict[str, Any] = {}
        for key, r in rigs.items():
            err = _reprojection_errors(r, markers, scored)
            pooled[key].append(err.ravel())
            entry[key] = reprojection_scores(err, conf, rig.names)
            if key == primary:
                curve = metrics.gc_curve(err, conf, GC_THRESHOLDS_PX, MIN_CONFIDENCE)
                entry["gc_curve"] = dict(zip((f"{d:g}" for d in GC_THRESHOLDS_PX), map(float, curve)))
        entry.update({k: entry[primary][k] for k in ("gc5", "gc10", "median_px", "sigma_niqr_px", "per_camera")})
        confident = trial.relabelled() & (conf >= MIN_CONFIDENCE)
        entry["detections_relabelled"] = {n: int(k) for n, k in zip(rig.names, confident.sum(axis=(1, 2)))}
        if left_right_relabelled is not None:
            entry["left_right_relabelled"] = dict(left_right_relabelled[trial.name])
        if rejected is not None:
            entry["rejected_frames"] = {n: list(f) for n, f in rejected[trial.name].items()}
        out["trials"][trial.name] = entry
    conf = np.concatenate(confs)
    for key in rigs:
        summary = reprojection_scores(np.concatenate(pooled[key])[None], conf[None], ["all"])
        summary.pop("per_camera")
        out[key] = summary
    out.update({k: out[primary][k] for k in ("gc5", "gc10", "median_px", "sigma_niqr_px")})
    out["final_loss"] = float(loss_history[-1]) if len(loss_history) else None
    return out


def holdout_scores(result: FitResult, rig: CameraRig, captures: Sequence[Capture]) -> dict:
    """Scores (:func:`reprojection_scores`) of a fit on cameras it did not use: per trial of
    ``result``, its model markers projected by ``rig`` (those cameras' calibration as given, in
    the fit's world) against the detections of ``rig``'s cameras in ``captures`` (one per trial,
    as given; other cameras ignored), with the pooled scores under ``"all"``.

    Raises:
        InputError: a capture lacks one of ``rig``'s cameras.
    """
    out: dict[str, Any] = {"cameras": list(rig.names), "min_confidence": MIN_CONFIDENCE, "trials": {}}
    errs, confs = [], []
    for i, (trial, cap) in enumerate(zip(result.trials, captures)):
        missing = [c for c in rig.names if c not in cap.camera_names]
        if missing:
            raise InputError(f"capture {cap.name!r}: no detections of held-out camera(s) {', '.join(missing)}")
        order = [cap.camera_names.index(c) for c in rig.names]
        err = np.asarray(metrics.reprojection_errors(rig, result.markers(i), np.nan_to_num(cap.keypoints[order])), float)
        conf = cap.confidence[order]
        out["trials"][trial.name] = reprojection_scores(err, conf, rig.names)
        errs.append(err.ravel())
        confs.append(conf.ravel())
    summary = reprojection_scores(np.concatenate(errs)[None], np.concatenate(confs)[None], ["all"])
    summary.pop("per_camera")
    out["all"] = summary
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
      rotation and centre errors of the refined rig, and of the rig the fit started from;
    - ``scale_error_pct``: per scale group, the relative error (percent) of its bodies' scale
      (:func:`~mjx_biomech.fitting.uncertainty.effective_log_scales`) and, when the fit has
      standard errors, ``scale_sigma_pct`` (its σ, percent) and ``scale_not_determined``.
    """
    from mjx_biomech.fitting.uncertainty import effective_log_scales

    model = result.model
    if isinstance(coords, np.ndarray) and coords.ndim == 2:
        coords = [coords]
    if len(coords) != len(result.trials):
        raise InputError(f"coords: expected one (T, C) array per trial ({len(result.trials)}), got {len(coords)}")
    true_b = np.asarray(model.body_scales(jnp.asarray(params.scales)), float)[1:]
    fit_b = np.asarray(model.body_scales(jnp.asarray(result.params.scales)), float)[1:]
    out: dict[str, Any] = {"scale_error_max_pct": float(np.max(np.abs(fit_b / true_b - 1)) * 100)}
    eff = [np.asarray(effective_log_scales(model, jnp.log(jnp.asarray(p.scales))), float) for p in (result.params, params)]
    out["scale_error_pct"] = dict(zip(model.scale_param_names, map(float, 100 * np.expm1(eff[0] - eff[1]))))
    if result.uncertainty is not None:
        out["scale_sigma_pct"] = {n: 100 * s for n, s in result.uncertainty.scale_sigma.items()}
        out["scale_not_determined"] = list(result.uncertainty.undetermined_scales)
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
