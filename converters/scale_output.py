"""What a scaling run writes, as OpenSim's ScaleTool and InverseKinematicsTool write it, plus a
report and plots.

One folder per run:

- ``model_scaled.osim``: the person in OpenSim (:func:`converters.osim.export`: bodies, joints
  and markers scaled, marker offsets added), masses and inertias as ScaleTool sets them
  (:func:`scaled_masses`), markers attached from a marker-set file written on their bodies;
- ``model_scaled.xml``: the same person as MuJoCo MJCF (``model.to_mjcf`` with the same mass
  options);
- per trial (the static one too) ``<trial>.mot`` and ``<trial>_marker_errors.sto``, as
  :mod:`converters.ik_output` writes them, and plots of the motion trials;
- ``report.json``: scales per parameter and per body, marker offsets, masses, marker RMS and
  maximum per trial and per marker, times, and why a file could not be written;
- ``plots/scales.png``: the scale factors and marker offsets.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from converters import ik_output, osim
from converters.opensim_frame import xml_numbers
from converters.opensim_setup import MarkerPlacement
from mjx_biomech.body.scaling import scaled_mass_properties
from mjx_biomech.errors import InputError
from mjx_biomech.fitting.markers import MarkerFitResult
from mjx_biomech.io import atomic_write, write_text_atomic

__all__ = ["scale_report", "scaled_masses", "write_scale_outputs", "write_scaled_osim"]


def _body_scales(model, params) -> np.ndarray:
    """(nbody, 3) every body's scale vector, in float64."""
    with jax.enable_x64(True):
        return np.asarray(model.body_scales(jnp.asarray(params.scales, jnp.float64)))


def scaled_masses(model, params, total_mass: float | None, preserve_mass_distribution: bool) -> np.ndarray:
    """(nbody,) kg: each body's mass as OpenSim's ScaleTool sets it, by the core's scaling rule
    (:func:`mjx_biomech.body.scaling.scaled_mass_properties`).

    Geometric scaling gives ``m₀ sₓ s_y s_z``. With ``total_mass``, ScaleTool then rescales every
    body by one factor so the masses sum to it, starting from the geometric masses, or from the
    unscaled ones when ``preserve_mass_distribution`` (each body keeps its share of the total).
    Inertias follow their body's mass.
    """
    props = scaled_mass_properties(model.mj_model, _body_scales(model, params), np, total_mass, preserve_mass_distribution)
    return np.asarray(props["body_mass"])


def _mass_ratios(model, params, masses: np.ndarray) -> np.ndarray:
    """(nbody,) each body's mass over its geometrically scaled mass (1 for massless bodies)."""
    geometric = np.asarray(model.mj_model.body_mass, float) * np.prod(_body_scales(model, params), axis=1)
    return np.where(geometric > 0, masses / np.where(geometric > 0, geometric, 1.0), 1.0)


def write_scaled_osim(
    model, params, path: str | os.PathLike, masses: np.ndarray, markers: Sequence[MarkerPlacement] = ()
) -> Path:
    """The scaled ``.osim`` (:func:`converters.osim.export`) with body masses ``masses`` (nbody,)
    kg, inertias following them; for a model converted from ``.osim``, the attached ``markers``
    are written on their bodies at their scaled, offset sites.

    Raises:
        InputError or ValueError: as :func:`converters.osim.export` refuses the model.
    """
    path = Path(osim.export(model, params, path))
    ratios = _mass_ratios(model, params, masses)
    tree = ET.parse(path)
    root = tree.getroot().find("Model")
    for el in root.findall("BodySet/objects/Body"):
        name = el.get("name")
        if name in model.body_names and ratios[model.body_names.index(name)] != 1.0:
            b = model.body_names.index(name)
            el.find("mass").text = repr(float(masses[b]))
            inertia = el.find("inertia")
            inertia.text = xml_numbers(np.array([float(v) for v in inertia.text.split()]) * ratios[b])
    if markers and "source" in (model.metadata.get("opensim") or {}):
        _write_markers(model, params, root, markers)
    with atomic_write(path) as f:
        tree.write(f, encoding="unicode", xml_declaration=True)
    return path


def _write_markers(model, params, root: ET.Element, markers: Sequence[MarkerPlacement]) -> None:
    """Attached markers as ``<Marker>`` s on their bodies (a converted body's frame is OpenSim's)."""
    marker_set = root.find("MarkerSet")
    if marker_set is None:
        marker_set = ET.SubElement(root, "MarkerSet", name="markerset")
    objects = marker_set.find("objects")
    if objects is None:
        objects = ET.SubElement(marker_set, "objects")
    m = model.mj_model
    scales = _body_scales(model, params)
    offsets = np.asarray(params.offsets, float)
    table = model.marker_sets["opensim"]
    for placement in markers:
        for old in objects.findall(f"Marker[@name='{placement.name}']"):
            objects.remove(old)
        site = model.site_names.index(table[placement.name])
        body = int(m.site_bodyid[site])
        el = ET.SubElement(objects, "Marker", name=placement.name)
        ET.SubElement(el, "socket_parent_frame").text = f"/bodyset/{model.body_names[body]}"
        ET.SubElement(el, "location").text = xml_numbers(m.site_pos[site] * scales[body] + offsets[site])
        ET.SubElement(el, "fixed").text = "true" if placement.fixed else "false"


def scale_report(result: MarkerFitResult, masses: np.ndarray) -> dict:
    """The scaling's numbers: scale parameters and body scales, marker offsets (m, body frame),
    masses (kg), the start and the objective's history, times and each trial's marker errors."""
    model = result.model
    fitted = set(result.fitted_markers)
    trials = ([result.static] if result.static is not None else []) + list(result.trials)
    return {
        "scales": {
            "parameters": result.scales,
            "fitted": list(result.fitted_scales),
            "bodies": {name: [float(v) for v in s] for name, s in result.body_scales.items()},
            "initial_overall": result.initial_scale,
            # Standard errors (relative, %) and the scales the data leave undetermined (σ > 2 %).
            "sigma_pct": {name: 100 * s for name, s in result.scale_sigma.items()},
            "not_determined": list(result.undetermined_scales),
        },
        "markers": {
            name: {"offset_m": [float(v) for v in o], "offset_norm_m": float(np.linalg.norm(o)),
                   "fixed": name in result.fixed_markers, "fitted": name in fitted,
                   "offset_sigma_m": ([float(v) for v in result.offset_sigma_m[k]]
                                      if result.offset_sigma_m is not None and name in fitted else None),
                   "not_determined": name in result.undetermined_markers}
            for k, (name, o) in enumerate(zip(result.marker_names, result.offsets))
        },
        "masses_kg": {name: float(masses[b]) for b, name in enumerate(model.body_names) if masses[b] > 0},
        "total_mass_kg": float(np.sum(masses)),
        # None when the scales were given (OpenSim's measurements), not fitted.
        "objective": ({"start": float(result.history[0]), "end": float(result.history[-1]),
                       "accepted_steps": len(result.history) - 1} if len(result.history) else None),
        "frames_used": dict(result.frames_used),
        "time_s": {"scale": result.scale_seconds, "total": result.seconds},
        "static_trial": result.static.name if result.static is not None else None,
        "trials": {t.name: ik_output.marker_report(t) for t in trials},
    }


def _scales_plot(result: MarkerFitResult, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scales = {n: v for n, v in result.scales.items() if n in (result.fitted_scales or result.model.scale_param_names)}
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(7.0, 0.22 * len(result.marker_names)), 6))
    top.bar(list(scales), list(scales.values()))
    top.axhline(1.0, color="k", lw=0.6)
    top.set_ylabel("scale")
    top.set_title("scale factors", fontsize=10)
    bottom.bar(result.marker_names, 1000 * np.linalg.norm(result.offsets, axis=1))
    bottom.set_ylabel("offset (mm)")
    bottom.set_title("marker offsets", fontsize=10)
    for ax in (top, bottom):
        ax.tick_params(axis="x", labelrotation=90, labelsize=6)
    fig.tight_layout()
    with atomic_write(path, "wb", encoding=None) as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    return path


def write_scale_outputs(
    folder: str | os.PathLike,
    result: MarkerFitResult,
    total_mass: float | None = None,
    preserve_mass_distribution: bool = True,
    markers: Sequence[MarkerPlacement] = (),
    settings: dict | None = None,
) -> dict[str, Path]:
    """Write every output of a scaling run into ``folder`` (created); returns output name -> path.

    ``total_mass`` (kg) and
    ``preserve_mass_distribution`` set the masses (:func:`scaled_masses`); ``markers``: the
    placements attached from a marker-set file; ``settings`` go into ``report.json`` as they are.
    A model :func:`converters.osim.export` refuses gets no ``.osim``; the report says why.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model, params = result.model, result.params
    masses = scaled_masses(model, params, total_mass, preserve_mass_distribution)
    written: dict[str, Path] = {}
    outputs: dict[str, str] = {}
    written["model_scaled.xml"] = Path(model.to_mjcf(params, folder / "model_scaled.xml", total_mass,
                                                     preserve_mass_distribution))
    try:
        written["model_scaled.osim"] = write_scaled_osim(model, params, folder / "model_scaled.osim", masses, markers)
    except (InputError, ValueError) as e:
        outputs["osim_not_written"] = f"converters.osim.export refuses {model.source}: {e}"
    report = {"settings": dict(settings or {}, total_mass_kg=total_mass,
                                preserve_mass_distribution=preserve_mass_distribution)}
    report.update(scale_report(result, masses))
    if result.static is not None:
        files, report["trials"][result.static.name] = ik_output.write_trial_outputs(folder, result.static, plots=False)
        written.update(files)
    for trial in result.trials:
        files, report["trials"][trial.name] = ik_output.write_trial_outputs(folder, trial)
        written.update(files)
    written["plots/scales.png"] = _scales_plot(result, folder / "plots" / "scales.png")
    report["outputs"] = dict({k: str(p) for k, p in written.items() if "/" not in k}, **outputs)
    written["report.json"] = write_text_atomic(folder / "report.json", json.dumps(report, indent=2) + "\n")
    return written
