"""OpenSim setup files: ``Setup_IK.xml`` (InverseKinematicsTool), ``Setup_Scale.xml``
(ScaleTool), ``MarkerSet`` files, and the inputs a setup names (a .trc as a :class:`MarkerTrial`,
coordinate tasks as IK targets).

Both OpenSim 3 (``<OpenSimDocument Version="30000">``, markers attached by ``<body>``) and
OpenSim 4 (``Version="40000"`` and later, markers attached by ``<socket_parent_frame>``) files
are read; absent properties take OpenSim's defaults. File names inside a setup are relative to
the setup file's folder, as OpenSim resolves them.
"""

from __future__ import annotations

import dataclasses
import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from scipy.interpolate import make_smoothing_spline

from converters import mot, trc
from converters.osim_parse import read_xml
from mjx_biomech.capture.marker_trials import MarkerTrial
from mjx_biomech.errors import InputError
from mjx_biomech.fitting.marker_objective import CoordinateTarget
from mjx_biomech.fitting.measurements import Measurement

__all__ = [
    "CoordinateTask", "IKSetup", "MarkerPlacement", "MarkerTask", "ScaleSetup", "coordinate_targets", "marker_weights",
    "read_ik_setup", "read_marker_set", "read_marker_trial", "read_scale_setup",
]

_VALUE_TYPES = ("default_value", "manual_value", "from_file")


@dataclasses.dataclass(frozen=True)
class MarkerTask:
    """An ``<IKMarkerTask>``: track marker ``name`` with ``weight`` when ``apply``."""

    name: str
    apply: bool
    weight: float


@dataclasses.dataclass(frozen=True)
class CoordinateTask:
    """An ``<IKCoordinateTask>``: pull coordinate ``name`` towards a value with ``weight``.

    ``value_type``: ``default_value`` (the model's default), ``manual_value`` (``value``, radians
    or metres, as OpenSim 4 uses it) or ``from_file`` (the setup's coordinate file).
    """

    name: str
    apply: bool
    weight: float
    value_type: str
    value: float


@dataclasses.dataclass(frozen=True)
class IKSetup:
    """An OpenSim ``InverseKinematicsTool`` setup; paths resolved against the setup's folder
    (None where the setup names no file)."""

    path: Path
    name: str
    model_file: Path | None
    marker_file: Path | None
    coordinate_file: Path | None
    output_motion_file: str | None
    time_range: tuple[float, float]
    accuracy: float
    constraint_weight: float
    marker_tasks: tuple[MarkerTask, ...]
    coordinate_tasks: tuple[CoordinateTask, ...]


@dataclasses.dataclass(frozen=True)
class ScaleSetup:
    """An OpenSim ``ScaleTool`` setup; paths resolved against the setup's folder (None where the
    setup names no file).

    ``mass``: kg (None where the setup gives none, OpenSim's -1); ``model_file`` and
    ``marker_set_file``: ``GenericModelMaker``'s; ``marker_file``, ``coordinate_file``,
    ``time_range`` (s, the static frames averaged), the tasks and ``output_model_file``:
    ``MarkerPlacer``'s (its marker file and time range default to ``ModelScaler``'s);
    ``preserve_mass_distribution``: ``ModelScaler``'s. ``scaling_order``, ``measurements``
    (applied ones, a ``MeasurementSet`` given in a ``file`` attribute read from that file) and
    ``manual_scales`` (body -> (3,), the applied ``Scale`` entries of the ``ScaleSet``) are
    ``ModelScaler``'s, used by ``mjx-biomech scale --scaling setup``; ``scaler_apply`` and
    ``placer_apply`` are the two steps' ``<apply>``.
    """

    path: Path
    name: str
    mass: float | None
    model_file: Path | None
    marker_set_file: Path | None
    marker_file: Path | None
    coordinate_file: Path | None
    time_range: tuple[float, float]
    preserve_mass_distribution: bool
    output_model_file: str | None
    marker_tasks: tuple[MarkerTask, ...]
    coordinate_tasks: tuple[CoordinateTask, ...]
    scaling_order: tuple[str, ...] = ()
    measurements: tuple[Measurement, ...] = ()
    manual_scales: Mapping[str, tuple[float, float, float]] = dataclasses.field(default_factory=dict)
    scaler_apply: bool = True
    placer_apply: bool = True


@dataclasses.dataclass(frozen=True)
class MarkerPlacement:
    """A ``<Marker>`` of a ``MarkerSet``: ``location`` (3,) metres in ``body``'s frame (OpenSim's
    Y-up body frame); ``fixed``: kept in place by marker placement."""

    name: str
    body: str
    location: tuple[float, float, float]
    fixed: bool


class _Reader:
    """Text of child elements, with errors naming the file and the element."""

    def __init__(self, path: Path):
        self.path = path
        self.root = read_xml(path)

    def error(self, where: str, what: str) -> InputError:
        return InputError(f"{self.path}: {where}: {what}")

    def text(self, el: ET.Element, tag: str) -> str | None:
        child = el.find(tag)
        if child is None or child.text is None or not child.text.strip() or child.text.strip() == "Unassigned":
            return None
        return child.text.strip()

    def numbers(self, el: ET.Element, tag: str, where: str, count: int, default: str) -> tuple[float, ...]:
        text = self.text(el, tag) or default
        try:
            values = tuple(float(v) for v in text.split())
        except ValueError:
            raise self.error(where, f"<{tag}> {text!r} is not {count} number(s)") from None
        if len(values) != count:
            raise self.error(where, f"<{tag}> has {len(values)} values; expected {count}")
        return values

    def flag(self, el: ET.Element, tag: str, where: str, default: bool) -> bool:
        text = self.text(el, tag)
        if text is None:
            return default
        if text.lower() in ("true", "1"):
            return True
        if text.lower() in ("false", "0"):
            return False
        raise self.error(where, f"<{tag}> {text!r}; expected true or false")

    def file(self, el: ET.Element, tag: str) -> Path | None:
        text = self.text(el, tag)
        return None if text is None else (self.path.parent / text).resolve()


def _weight(reader: _Reader, el: ET.Element, where: str) -> float:
    (weight,) = reader.numbers(el, "weight", where, 1, "1")
    if not weight >= 0:
        raise reader.error(where, f"<weight> {weight}; expected a number >= 0")
    return weight


def _tasks(reader: _Reader, tool: ET.Element) -> tuple[tuple[MarkerTask, ...], tuple[CoordinateTask, ...]]:
    """The tasks of ``tool``'s ``<IKTaskSet>`` (none when it has no task set)."""
    marker_tasks, coordinate_tasks = [], []
    task_set = tool.find("IKTaskSet")
    objects = task_set.find("objects") if task_set is not None else None
    for el in list(objects) if objects is not None else []:
        name = el.get("name", "")
        task_where = f"<IKTaskSet> <{el.tag} name={name!r}>"
        if not name:
            raise reader.error(task_where, "a task needs a name attribute")
        apply = reader.flag(el, "apply", task_where, True)
        if el.tag == "IKMarkerTask":
            marker_tasks.append(MarkerTask(name, apply, _weight(reader, el, task_where)))
        elif el.tag == "IKCoordinateTask":
            value_type = reader.text(el, "value_type") or "default_value"
            if value_type not in _VALUE_TYPES:
                raise reader.error(task_where, f"<value_type> {value_type!r}; expected one of {', '.join(_VALUE_TYPES)}")
            (value,) = reader.numbers(el, "value", task_where, 1, "0")
            coordinate_tasks.append(CoordinateTask(name, apply, _weight(reader, el, task_where), value_type, value))
        else:
            raise reader.error(task_where, "expected <IKMarkerTask> or <IKCoordinateTask>")
    for kind, tasks in (("IKMarkerTask", marker_tasks), ("IKCoordinateTask", coordinate_tasks)):
        names = [t.name for t in tasks]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise reader.error("<IKTaskSet>", f"{kind} {twice} listed more than once")
    return tuple(marker_tasks), tuple(coordinate_tasks)


def read_ik_setup(path: str | os.PathLike) -> IKSetup:
    """Read an OpenSim ``Setup_IK.xml``.

    Raises:
        InputError: naming the file and the element, for a file that is not an
            ``InverseKinematicsTool`` setup, a non-numeric value, an unknown ``value_type``, or a
            task listed twice.
    """
    reader = _Reader(Path(path))
    root = reader.root
    tool = root if root.tag == "InverseKinematicsTool" else root.find("InverseKinematicsTool")
    if tool is None:
        raise InputError(f"{reader.path}: no <InverseKinematicsTool> element; expected an OpenSim IK setup")
    where = f"<InverseKinematicsTool name={tool.get('name', '')!r}>"
    start, end = reader.numbers(tool, "time_range", where, 2, "-inf inf")
    (accuracy,) = reader.numbers(tool, "accuracy", where, 1, "1e-5")
    (constraint_weight,) = reader.numbers(tool, "constraint_weight", where, 1, "inf")
    if not (accuracy > 0):
        raise reader.error(where, f"<accuracy> {accuracy}; expected a positive number")
    marker_tasks, coordinate_tasks = _tasks(reader, tool)
    return IKSetup(
        path=reader.path,
        name=tool.get("name", "") or reader.path.stem,
        model_file=reader.file(tool, "model_file"),
        marker_file=reader.file(tool, "marker_file"),
        coordinate_file=reader.file(tool, "coordinate_file"),
        output_motion_file=reader.text(tool, "output_motion_file"),
        time_range=(start, end),
        accuracy=accuracy,
        constraint_weight=constraint_weight,
        marker_tasks=marker_tasks,
        coordinate_tasks=coordinate_tasks,
    )


def read_scale_setup(path: str | os.PathLike) -> ScaleSetup:
    """Read an OpenSim ``Setup_Scale.xml`` (OpenSim 3 or 4).

    Raises:
        InputError: naming the file and the element, for a file that is not a ``ScaleTool``
            setup, a non-numeric value, or a bad task (as :func:`read_ik_setup`).
    """
    reader = _Reader(Path(path))
    root = reader.root
    tool = root if root.tag == "ScaleTool" else root.find("ScaleTool")
    if tool is None:
        raise InputError(f"{reader.path}: no <ScaleTool> element; expected an OpenSim scale setup")
    where = f"<ScaleTool name={tool.get('name', '')!r}>"
    (mass,) = reader.numbers(tool, "mass", where, 1, "-1")
    empty = ET.Element("none")
    maker = tool.find("GenericModelMaker")
    maker = empty if maker is None else maker
    scaler = tool.find("ModelScaler")
    scaler = empty if scaler is None else scaler
    placer = tool.find("MarkerPlacer")
    placer = empty if placer is None else placer
    scaler_range = reader.numbers(scaler, "time_range", f"{where} <ModelScaler>", 2, "-inf inf")
    time_range = reader.numbers(placer, "time_range", f"{where} <MarkerPlacer>", 2, " ".join(map(repr, scaler_range)))
    marker_tasks, coordinate_tasks = _tasks(reader, placer)
    order = tuple((reader.text(scaler, "scaling_order") or "measurements").split())
    for step in order:
        if step not in ("measurements", "manualScale"):
            raise reader.error(f"{where} <ModelScaler>", f"<scaling_order> step {step!r}; expected measurements or manualScale")
    return ScaleSetup(
        path=reader.path,
        name=tool.get("name", "") or reader.path.stem,
        mass=mass if mass > 0 else None,
        model_file=reader.file(maker, "model_file"),
        marker_set_file=reader.file(maker, "marker_set_file"),
        marker_file=reader.file(placer, "marker_file") or reader.file(scaler, "marker_file"),
        coordinate_file=reader.file(placer, "coordinate_file"),
        time_range=time_range,
        preserve_mass_distribution=reader.flag(scaler, "preserve_mass_distribution", f"{where} <ModelScaler>", False),
        output_model_file=reader.text(placer, "output_model_file"),
        marker_tasks=marker_tasks,
        coordinate_tasks=coordinate_tasks,
        scaling_order=order,
        measurements=_measurements(reader, scaler, f"{where} <ModelScaler>"),
        manual_scales=_manual_scales(reader, scaler, f"{where} <ModelScaler>"),
        scaler_apply=reader.flag(scaler, "apply", f"{where} <ModelScaler>", True),
        placer_apply=reader.flag(placer, "apply", f"{where} <MarkerPlacer>", True),
    )


def _objects(el: ET.Element | None, tag: str) -> list[ET.Element]:
    """The ``tag`` children of ``el``'s ``<objects>``."""
    objects = el.find("objects") if el is not None else None
    return [o for o in list(objects) if o.tag == tag] if objects is not None else []


def _measurements(reader: _Reader, scaler: ET.Element, where: str) -> tuple[Measurement, ...]:
    """The applied ``<Measurement>`` entries of ``scaler``'s ``<MeasurementSet>``."""
    element = scaler.find("MeasurementSet")
    if element is not None and element.get("file"):
        inner = _Reader((reader.path.parent / element.get("file")).resolve())
        element = inner.root if inner.root.tag == "MeasurementSet" else inner.root.find(".//MeasurementSet")
        if element is None:
            raise inner.error("file", "no <MeasurementSet> element")
        reader = inner
    out = []
    for m in _objects(element, "Measurement"):
        name = m.get("name", "")
        at = f"{where} <Measurement name={name!r}>"
        if not reader.flag(m, "apply", at, True):
            continue
        pairs = []
        for pair in _objects(m.find("MarkerPairSet"), "MarkerPair"):
            markers = (reader.text(pair, "markers") or "").split()
            if len(markers) != 2:
                raise reader.error(at, f"<MarkerPair> <markers> names {len(markers)} markers; expected 2")
            pairs.append((markers[0], markers[1]))
        bodies = []
        for body in _objects(m.find("BodyScaleSet"), "BodyScale"):
            axes = "".join((reader.text(body, "axes") or "X Y Z").split())
            if not body.get("name") or any(a not in "XYZxyz" for a in axes):
                raise reader.error(at, f"<BodyScale name={body.get('name', '')!r}> <axes> {axes!r}; "
                                       "expected a body name and X, Y, Z")
            bodies.append((body.get("name"), axes.upper()))
        out.append(Measurement(name, tuple(pairs), tuple(bodies)))
    return tuple(out)


def _manual_scales(reader: _Reader, scaler: ET.Element, where: str) -> dict[str, tuple[float, float, float]]:
    """Body -> (3,) factors of the applied ``<Scale>`` entries of ``scaler``'s ``<ScaleSet>``."""
    out = {}
    for el in _objects(scaler.find("ScaleSet"), "Scale"):
        body = reader.text(el, "segment")
        at = f"{where} <ScaleSet> <Scale segment={body!r}>"
        if body is None:
            raise reader.error(at, "no <segment>")
        if reader.flag(el, "apply", at, True):
            values = reader.numbers(el, "scales", at, 3, "1 1 1")
            if not all(np.isfinite(v) and v > 0 for v in values):
                raise reader.error(at, f"<scales> {values}; expected three positive numbers")
            out[body] = values
    return out


def read_marker_set(path: str | os.PathLike) -> tuple[MarkerPlacement, ...]:
    """Read an OpenSim ``MarkerSet`` file (or the ``<MarkerSet>`` of a model file).

    A marker's body is OpenSim 3's ``<body>`` or the last part of OpenSim 4's
    ``<socket_parent_frame>`` (``/bodyset/torso`` → ``torso``).

    Raises:
        InputError: naming the file and the marker, for a missing body or name, a location that
            is not three numbers, or a marker listed twice.
    """
    reader = _Reader(Path(path))
    root = reader.root
    marker_set = root if root.tag == "MarkerSet" else root.find(".//MarkerSet")
    if marker_set is None:
        raise InputError(f"{reader.path}: no <MarkerSet> element")
    objects = marker_set.find("objects")
    out: list[MarkerPlacement] = []
    for el in list(objects) if objects is not None else []:
        if el.tag != "Marker":
            continue
        name = el.get("name", "")
        where = f"<Marker name={name!r}>"
        if not name:
            raise reader.error(where, "a marker needs a name attribute")
        body = reader.text(el, "body") or reader.text(el, "socket_parent_frame")
        if body is None:
            raise reader.error(where, "expected <body> (OpenSim 3) or <socket_parent_frame> (OpenSim 4)")
        location = reader.numbers(el, "location", where, 3, "0 0 0")
        out.append(MarkerPlacement(name, body.rstrip("/").rsplit("/", 1)[-1], location,
                                   reader.flag(el, "fixed", where, False)))
    names = [m.name for m in out]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputError(f"{reader.path}: <MarkerSet>: markers {twice} listed more than once")
    if not out:
        raise InputError(f"{reader.path}: <MarkerSet> holds no <Marker>")
    return tuple(out)


def read_marker_trial(path: str | os.PathLike, name: str | None = None) -> MarkerTrial:
    """A .trc file as a :class:`MarkerTrial`: metres (from the file's Units), MuJoCo's Z-up world,
    NaN gaps; named after the file's stem unless ``name`` is given."""
    data = trc.read_trc(path, z_up=True)
    path = Path(path)
    return MarkerTrial(name or path.stem, data.times, data.marker_names, data.positions, source=str(path))


def marker_weights(setup: IKSetup | ScaleSetup, model_markers, trial: MarkerTrial) -> dict[str, float] | None:
    """Marker name -> weight of the applied ``IKMarkerTask`` s, or None when the setup has no
    marker task (OpenSim then tracks every marker the model and the trial share, weight 1).

    Raises:
        InputError: naming the setup and the task, for a marker neither the model nor the trial has.
    """
    if not setup.marker_tasks:
        return None
    known = set(model_markers) | set(trial.marker_names)
    nowhere = [t.name for t in setup.marker_tasks if t.apply and t.name not in known]
    if nowhere:
        raise InputError(f"{setup.path}: <IKMarkerTask> {nowhere} name markers that neither the model nor "
                         f"{trial.source} has")
    return {t.name: t.weight for t in setup.marker_tasks if t.apply}


def coordinate_targets(setup: IKSetup | ScaleSetup, model, times: np.ndarray) -> list[CoordinateTarget]:
    """The applied ``IKCoordinateTask`` s as IK targets at ``times`` (T,) s.

    ``from_file`` values come from the setup's coordinate file (.mot/.sto, degrees where it says so)
    through a smoothing spline whose smoothing generalised cross-validation chooses, as OpenSim's
    ``GCVSpline`` does (cubic here, quintic there; linear interpolation below 5 rows).

    Raises:
        InputError: naming the setup and the task, for a coordinate the model lacks, a
            ``from_file`` task without a coordinate file or without its column.
    """
    names = model.coordinate_names
    rotational = dict(zip(names, (m == "rotational" for m in model.coordinate_motion)))
    table = None
    out = []
    for task in setup.coordinate_tasks:
        if not task.apply:
            continue
        where = f"{setup.path}: <IKCoordinateTask name={task.name!r}>"
        if task.name not in names:
            raise InputError(f"{where}: the model has no independent coordinate {task.name!r}")
        if task.value_type == "default_value":
            value = None
        elif task.value_type == "manual_value":
            value = task.value
        else:
            if setup.coordinate_file is None:
                raise InputError(f"{where}: value_type from_file but the setup names no <coordinate_file>")
            if table is None:
                table = mot.read_mot(setup.coordinate_file)
                table = table.to_internal([rotational.get(n, False) for n in table.names])
            if task.name not in table.names:
                raise InputError(f"{where}: {setup.coordinate_file} has no column {task.name!r}")
            column = table.column(task.name)
            if len(column) >= 5:
                value = make_smoothing_spline(table.times, column)(np.asarray(times))
            else:
                value = np.interp(times, table.times, column)
        out.append(CoordinateTarget(task.name, task.weight, value))
    return out
