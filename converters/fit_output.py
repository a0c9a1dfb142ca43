"""Write a fit (:class:`mjx_biomech.analysis.results.FitResult`) to one folder, in the files
OpenSim and MuJoCo read (DESIGN.md, "Outputs of a fit").

:func:`save` writes, atomically and without removing other files there: ``<trial>.mot``
(coordinates, OpenSim names, rotations in degrees), ``<trial>_std.sto`` (their standard
errors, same units and columns, when the fit computed them), ``<trial>_markers.trc`` (model markers,
OpenSim Y-up), ``model_scaled.xml`` (MuJoCo), ``model_scaled.osim`` (OpenSim, when the converter
supports the model; otherwise a note in the report), ``calibration_refined.toml``,
``report.json`` (every metric) and ``plots/*.png``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import jax
import numpy as np

from converters import mot, osim, osim_build, trc
from mjx_biomech.analysis import plots
from mjx_biomech.analysis.results import FitResult, file_stem
from mjx_biomech.errors import InputError
from mjx_biomech.io import atomic_write, write_text_atomic


def save(result: FitResult, folder: str | os.PathLike, truth: dict | None = None) -> Path:
    """Write every output of ``result`` to ``folder`` (created if needed; see the module
    docstring). ``truth`` (from :func:`mjx_biomech.analysis.results.truth_metrics`) is added to
    the report, its scalars and per-group scale errors and σ also at the top level. Returns the folder.

    The motion, markers, models, calibration and report are always written; a figure that
    fails is named in the report's ``notes`` (and ``plot_failures``) instead of stopping the
    rest. The marker ``.trc`` names every marker as the ``.osim`` beside it does, and the
    ``.osim``'s root coordinates have ranges that contain every frame of the ``.mot`` files, so
    OpenSim's InverseKinematicsTool runs on the two as written.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = result.model
    rotational = [m == "rotational" for m in model.coordinate_motion]
    notes: list[str] = []
    files: dict[str, Any] = {"trials": {}}
    marker_names, missing = opensim_marker_names(model, result.marker_set)
    if missing:
        notes.append(f"{len(missing)} marker(s) of set {result.marker_set!r} have no marker in model_scaled.osim "
                     f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}); the .trc keeps their keypoint names")
    for i, trial in enumerate(result.trials):
        stem = file_stem(trial.name, i)
        mot_path = mot.write_mot(folder / f"{stem}.mot", trial.times, model.coordinate_names, trial.coords, rotational, name=stem)
        trc_path = trc.write_trc(folder / f"{stem}_markers.trc", trial.times, marker_names, result.markers(i),
                                 z_up_input=True, data_rate=trial.capture.fps)
        files["trials"][trial.name] = {"mot": mot_path.name, "trc": trc_path.name}
        if trial.coords_std is not None:
            std_path = mot.write_mot(folder / f"{stem}_std.sto", trial.times, model.coordinate_names, trial.coords_std,
                                     rotational, name="Standard errors of the coordinates")
            files["trials"][trial.name]["std"] = std_path.name
    files["model_mjcf"] = model.to_mjcf(result.params, folder / "model_scaled.xml").name
    try:
        path = osim.export(model, result.params, folder / "model_scaled.osim")
        _widen_ranges(path, model, [t.coords for t in result.trials])
        files["model_osim"] = path.name
    except (NotImplementedError, InputError, ValueError, KeyError, ImportError) as e:
        notes.append(f"model_scaled.osim not written: converters.osim.export does not support this model ({type(e).__name__}: {e})")
    files["calibration"] = _refined_calibration(result).to_toml(folder / "calibration_refined.toml").name
    written, failed = plots.save_all(result, folder / "plots")
    files["plots"] = [p.name for p in written]
    notes += [f"plots/{name} not drawn ({error})" for name, error in failed.items()]
    report = {
        "model": str(getattr(model, "source", "")),
        "marker_set": result.marker_set,
        "scale_params": dict(zip(model.scale_param_names, map(float, np.asarray(result.params.scales)))),
        "settings": result.settings,
        "warnings": list(result.metrics.get("warnings", [])),
        "metrics": result.metrics,
        "files": files,
    }
    if result.uncertainty is not None:
        report["uncertainty"] = uncertainty_report(result)
    if truth is not None:
        report["truth"] = truth
        report.update({k: v for k, v in truth.items() if not isinstance(v, dict) or k in ("scale_error_pct", "scale_sigma_pct")})
    report["gc5"] = result.metrics.get("gc5")
    if failed:
        report["plot_failures"] = failed
    if notes:
        report["notes"] = notes
    write_text_atomic(folder / "report.json", json.dumps(_jsonable(report), indent=2))
    return folder


def uncertainty_report(result: FitResult) -> dict:
    """The standard errors of a fit for ``report.json``: the noise estimate and degrees of
    freedom, per scale group its σ in percent (``scale_sigma_pct``), per marker its offset's σ
    (``offset_sigma_mm``, x y z), per camera its rotation (degrees) and centre (mm) σ after
    bundle adjustment, per trial and coordinate the median σ (degrees or metres, as in the
    ``.mot``), and what the data do not determine (``not_determined``: scale groups with σ > 2 %,
    markers with an offset σ > 1 cm)."""
    u = result.uncertainty
    model = result.model
    rotational = [m == "rotational" for m in model.coordinate_motion]
    return {
        "noise_px": u.noise_px,
        "residuals": u.residuals,
        "parameters": u.parameters,
        "seconds": u.seconds,
        "scale_sigma_pct": {name: 100 * s for name, s in u.scale_sigma.items()},
        "offset_sigma_mm": {name: [1000 * float(x) for x in s] for name, s in zip(u.marker_names, u.offset_sigma_m)},
        "camera_sigma": u.camera_sigma,
        "coordinate_std_median": {
            trial.name: {name: float(np.degrees(m) if rot else m)
                         for name, rot, m in zip(model.coordinate_names, rotational, _nanmedian(trial.coords_std))}
            for trial in result.trials if trial.coords_std is not None
        },
        "not_determined": {"scales": list(u.undetermined_scales), "markers": list(u.undetermined_markers)},
    }


def _nanmedian(x: np.ndarray) -> np.ndarray:
    """Column medians of ``x`` (T, C) over finite values (NaN for a column without any)."""
    return np.array([np.median(c[np.isfinite(c)]) if np.isfinite(c).any() else np.nan for c in np.asarray(x).T])


def opensim_marker_names(model, marker_set: str) -> tuple[tuple[str, ...], list[str]]:
    """The names the ``.osim`` that :func:`converters.osim.export` writes gives the sites of
    ``marker_set``, in the set's order, and the keypoints whose site it has no marker for (their
    keypoint names are used). A model converted from ``.osim`` keeps that file's markers (its
    ``opensim`` marker set maps their names to sites); any other model gets one marker per
    site, named by :func:`converters.osim_build.marker_name`."""
    keypoints = model.marker_names(marker_set)
    sites = [model.site_names[i] for i in model.marker_site_ids(marker_set)]
    if "source" not in (model.metadata.get("opensim") or {}):
        return tuple(osim_build.marker_name(s) for s in sites), []
    by_site = {site: name for name, site in model.marker_sets.get("opensim", {}).items()}
    names = tuple(by_site.get(s, k) for s, k in zip(sites, keypoints))
    return names, [k for s, k in zip(sites, keypoints) if s not in by_site]


def _widen_ranges(path: Path, model, coords: list[np.ndarray]) -> None:
    """Widen the ranges of the coordinates in the ``.osim`` at ``path`` whose fitted values
    ``coords`` (per trial (T, C), the model's units) leave them (the root's: its heading and
    position are unbounded in a fit), to the values' span; the file is rewritten atomically."""
    values = np.concatenate(coords)
    lo, hi = np.nanmin(values, axis=0), np.nanmax(values, axis=0)
    tree = ET.parse(path)
    changed = False
    for i, name in enumerate(model.coordinate_names):
        for el in tree.getroot().iter("Coordinate"):
            rng = el.find("range")
            if el.get("name") != name or rng is None:
                continue
            a, b = (float(x) for x in rng.text.split())
            if lo[i] < a or hi[i] > b:
                rng.text = f"{min(a, lo[i])!r} {max(b, hi[i])!r}"
                changed = True
    if changed:
        with atomic_write(path) as f:
            tree.write(f, encoding="unicode", xml_declaration=True)


def _refined_calibration(result: FitResult):
    """The fit's rig, its ``[metadata]`` saying whether bundle adjustment moved it and, as
    ``error``, the median reprojection error (px) through it (confidence ≥ 0.5)."""
    kept = json.loads(result.rig.toml_extras)
    metadata = dict(kept.get("metadata") or {})
    metadata["adjusted"] = bool(result.settings.get("bundle_adjust", False))
    median = result.metrics.get("median_px")
    metadata["error"] = float(median) if median is not None and np.isfinite(median) else 0.0
    return dataclasses.replace(result.rig, toml_extras=json.dumps({**kept, "metadata": metadata}))


def _jsonable(x):
    """``x`` with NumPy/JAX scalars and arrays as Python numbers and lists; NaN and ±inf as null."""
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
