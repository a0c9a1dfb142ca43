"""What an IK run writes, as OpenSim's InverseKinematicsTool writes it, plus a report and plots.

One folder per run:

- ``<trial>.mot``: the coordinates (OpenSim names, rotations in degrees), loadable in OpenSim;
- ``<trial>_marker_errors.sto``: per frame ``total_squared_error`` (m²), ``marker_error_RMS``
  and ``marker_error_max`` (m), with OpenSim's header and its definitions (a marker missing in a
  frame counts 0 in the sum and 1 in the RMS's denominator);
- ``<trial>_std.sto``: the standard error of every coordinate in every frame, in the ``.mot``'s
  units (degrees for rotations), which OpenSim reads as a storage
  (:attr:`~mjx_biomech.fitting.ik.IKResult.coordinate_std`);
- ``report.json``: per trial, marker RMS and maximum overall and per marker, the markers
  skipped, solver iterations and times, and per-coordinate RMS differences from a reference
  .mot when one is given;
- ``plots/<trial>_marker_errors.png`` and ``plots/<trial>_joint_angles.png`` (±1.96 standard
  errors shaded, the reference dashed).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from converters import mot
from mjx_biomech.errors import InputError
from mjx_biomech.fitting.ik import IKResult
from mjx_biomech.io import atomic_write, write_text_atomic

__all__ = ["compare_with_reference", "marker_report", "write_ik_outputs", "write_trial_outputs"]


def _rotational(result: IKResult) -> np.ndarray:
    return np.array([m == "rotational" for m in result.coordinate_motion], dtype=bool)


def compare_with_reference(result: IKResult, reference: str | os.PathLike) -> dict:
    """Per-coordinate RMS difference (degrees for rotations, metres otherwise) between ``result``
    and a reference .mot at the result's times (the reference interpolated linearly), for the
    coordinates both have.

    Raises:
        InputError: naming the reference, when it shares no coordinate with the result or does not
            cover the result's times.
    """
    rotational = dict(zip(result.coordinate_names, _rotational(result)))
    table = mot.read_mot(reference)
    table = table.to_internal([rotational.get(n, False) for n in table.names])
    shared = [n for n in result.coordinate_names if n in table.names]
    if not shared:
        raise InputError(f"{reference}: no column is a coordinate of the result ({', '.join(result.coordinate_names)})")
    t = result.times
    if t[0] < table.times[0] - 1e-9 or t[-1] > table.times[-1] + 1e-9:
        raise InputError(f"{reference}: covers {table.times[0]}–{table.times[-1]} s, not the result's "
                         f"{t[0]}–{t[-1]} s")
    out = {}
    for name in shared:
        i = result.coordinate_names.index(name)
        diff = result.coordinates[:, i] - np.interp(t, table.times, table.column(name))
        rms = float(np.sqrt(np.mean(diff**2)))
        out[name] = {"rms_deg": float(np.degrees(rms))} if rotational[name] else {"rms_m": rms}
    return {"reference": str(reference), "coordinates": out}


def marker_report(result: IKResult) -> dict:
    """Marker errors of one trial (metres): overall over every observed marker and frame, per
    frame as OpenSim reports them, and per marker."""
    e = result.marker_errors
    seen = np.isfinite(e)
    markers = {}
    for k, name in enumerate(result.marker_names):
        col = e[seen[:, k], k]
        markers[name] = {
            "weight": float(result.marker_weights[k]),
            "frames_observed": int(col.size),
            "rms_m": float(np.sqrt(np.mean(col**2))) if col.size else None,
            "max_m": float(col.max()) if col.size else None,
        }
    return {
        "frames": len(result.times),
        "time_range_s": [float(result.times[0]), float(result.times[-1])],
        "marker_rms_m": float(np.sqrt(np.mean(e[seen] ** 2))),
        "marker_max_m": float(e[seen].max()),
        "opensim_marker_error_RMS_mean_m": float(np.mean(result.marker_rms)),
        "opensim_marker_error_max_mean_m": float(np.mean(result.marker_max)),
        "markers": markers,
        "skipped_markers": list(result.skipped_markers),
        "unmatched_markers": list(result.unmatched_markers),
        "iterations": {"mean": float(np.mean(result.iterations)), "max": int(np.max(result.iterations))},
        "converged_frames": int(np.sum(result.converged)),
        "noise_sigma_m": result.noise_sigma_m,
        "coordinate_std_median": {
            name: float(np.nanmedian(np.degrees(col) if rot else col)) if np.isfinite(col).any() else None
            for name, col, rot in zip(result.coordinate_names, result.coordinate_std.T, _rotational(result))
        } if result.coordinate_std is not None else None,
        "compile_seconds": result.compile_seconds,
        "solve_seconds": result.solve_seconds,
        "frames_per_second": float(len(result.times) / result.solve_seconds) if result.solve_seconds > 0 else None,
    }


def _plots(result: IKResult, folder: Path, reference: mot.MotionTable | None) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def save(fig, path: Path) -> Path:
        with atomic_write(path, "wb", encoding=None) as f:
            fig.savefig(f, format="png", dpi=110)
        plt.close(fig)
        return path

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(result.times, 1000 * result.marker_rms, label="RMS")
    ax.plot(result.times, 1000 * result.marker_max, label="max")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("marker error (mm)")
    ax.set_title(f"{result.name}: marker error", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths = [save(fig, folder / f"{result.name}_marker_errors.png")]

    rotational = _rotational(result)
    names = [n for n, r in zip(result.coordinate_names, rotational) if r]
    cols = 4
    rows = max(1, -(-len(names) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.2 * rows), squeeze=False)
    for ax, name in zip(axes.ravel(), names):
        i = result.coordinate_names.index(name)
        ax.plot(result.times, np.degrees(result.coordinates[:, i]), lw=1.2, label="mjx-biomech")
        if result.coordinate_std is not None:
            band = 1.96 * np.degrees(result.coordinate_std[:, i])
            middle = np.degrees(result.coordinates[:, i])
            ax.fill_between(result.times, middle - band, middle + band, alpha=0.3, lw=0, label="±1.96 σ")
        if reference is not None and name in reference.names:
            ax.plot(reference.times, np.degrees(reference.column(name)), "--", lw=0.9, label="reference")
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    axes[0, 0].set_ylabel("degrees", fontsize=8)
    axes[0, 0].legend(fontsize=6)
    fig.suptitle(f"{result.name}: joint angles", fontsize=10)
    # Fixed margins: tight_layout measures every tick label of every panel (seconds per figure).
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.05, top=1 - 0.9 / (2.2 * rows), wspace=0.25, hspace=0.45)
    paths.append(save(fig, folder / f"{result.name}_joint_angles.png"))
    return paths


def write_trial_outputs(
    folder: str | os.PathLike, result: IKResult, reference: str | os.PathLike | None = None, plots: bool = True
) -> tuple[dict[str, Path], dict]:
    """Write one trial's ``.mot``, ``_marker_errors.sto`` and (with ``plots``) plots into
    ``folder``; returns output name -> path and the trial's report entry (:func:`marker_report`,
    with the comparison with ``reference``, a .mot, when given)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rotational = _rotational(result)
    written = {f"{result.name}.mot": mot.write_mot(folder / f"{result.name}.mot", result.times, result.coordinate_names,
                                                    result.coordinates, rotational, name="Coordinates")}
    errors = np.stack([result.total_squared_error, result.marker_rms, result.marker_max], axis=1)
    written[f"{result.name}_marker_errors.sto"] = mot.write_mot(
        folder / f"{result.name}_marker_errors.sto", result.times,
        ("total_squared_error", "marker_error_RMS", "marker_error_max"), errors, [False] * 3,
        in_degrees=False, name="Model Marker Errors from IK")
    if result.coordinate_std is not None:
        written[f"{result.name}_std.sto"] = mot.write_mot(
            folder / f"{result.name}_std.sto", result.times, result.coordinate_names, result.coordinate_std, rotational,
            name="Standard errors of the coordinates")
    entry = marker_report(result)
    table = None
    if reference is not None:
        entry["compare"] = compare_with_reference(result, reference)
        table = mot.read_mot(reference)
        table = table.to_internal([dict(zip(result.coordinate_names, rotational)).get(n, False) for n in table.names])
    for path in _plots(result, folder / "plots", table) if plots else ():
        written[f"plots/{path.name}"] = path
    return written, entry


def write_ik_outputs(
    folder: str | os.PathLike,
    results: Sequence[IKResult],
    settings: dict | None = None,
    reference: str | os.PathLike | None = None,
) -> dict[str, Path]:
    """Write every output of an IK run into ``folder`` (created); returns name -> path.

    ``settings`` (model, setup, accuracy, ...) go into ``report.json`` as they are;
    ``reference``: a .mot to compare with and to draw beside the result.
    """
    folder = Path(folder)
    written: dict[str, Path] = {}
    report = {"settings": dict(settings or {}), "trials": {}}
    for result in results:
        files, report["trials"][result.name] = write_trial_outputs(folder, result, reference)
        written.update(files)
    written["report.json"] = write_text_atomic(folder / "report.json", json.dumps(report, indent=2) + "\n")
    return written
