"""Write a fit (:class:`mjx_biomech.analysis.results.FitResult`) to one folder, in the files
OpenSim and MuJoCo read (DESIGN.md, "Outputs of a fit").

:func:`save` writes, atomically and without removing other files there: ``<trial>.mot``
(coordinates, OpenSim names, rotations in degrees), ``<trial>_markers.trc`` (model markers,
OpenSim Y-up), ``model_scaled.xml`` (MuJoCo), ``model_scaled.osim`` (OpenSim, when the converter
supports the model; otherwise a note in the report), ``calibration_refined.toml``,
``report.json`` (every metric) and ``plots/*.png``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

from converters import mot, osim, trc
from mjx_biomech.analysis import plots
from mjx_biomech.analysis.results import FitResult, file_stem
from mjx_biomech.errors import InputError
from mjx_biomech.io import write_text_atomic


def save(result: FitResult, folder: str | os.PathLike, truth: dict | None = None) -> Path:
    """Write every output of ``result`` to ``folder`` (created if needed; see the module
    docstring). ``truth`` (from :func:`mjx_biomech.analysis.results.truth_metrics`) is added to
    the report, its scalars also at the top level. Returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = result.model
    rotational = [m == "rotational" for m in model.coordinate_motion]
    files: dict[str, Any] = {"trials": {}}
    for i, trial in enumerate(result.trials):
        stem = file_stem(trial.name, i)
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
