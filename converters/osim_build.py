"""Build an OpenSim 4 ``.osim`` from a MuJoCo body model (one that did not come from ``.osim``).

Lengths, masses and inertias are those of the person's statically scaled MuJoCo model
(``model.to_mujoco(params)``), computed in float64 by the same rule (:mod:`mjx_biomech.body.scaling`:
positions in a body times its scale, mass by ``s_x s_y s_z``, inertia from the scaled second
moment); dependent joints follow the core's rule (translational outputs times the parent
body's scale along the axis). The XML is written directly (no ``opensim`` install is needed to
export), and OpenSim 4.6 loads it with markers that agree with ``model.markers`` to float
precision (tests/test_osim_export.py).

What is mapped:

- Axes: MuJoCo world is Z-up, OpenSim ground Y-up. OpenSim ground is the frame turned +90°
  about X in the world (the bundled model's ``opensim_ground`` frame, a converted model's
  ground body): world ``(x, y, z)`` is OpenSim ``(x, z, -y)``. Gravity turns the same way.
- Bodies: one OpenSim ``Body`` per MuJoCo body, with its mass, centre of mass and full inertia
  matrix (principal moments turned by ``body_iquat``). A massless, jointless child of the world
  placed exactly at the OpenSim ground frame (what the ``.osim`` converter makes of ground)
  *is* OpenSim ground.
- Joints: a MuJoCo body's joints, in order, are cut into runs of up to three slides then up to
  three hinges (axes linearly independent, hinges of a run sharing one anchor ``jnt_pos``).
  Each run is a ``CustomJoint``: slides are translations along parent-frame axes, hinges the
  body-fixed rotation sequence, a nonzero anchor is a translation of both the parent and the
  child offset frames. When a body needs several runs, massless bodies named
  ``<body>_link<k>`` carry the intermediate frames. A body without joints is welded.
- Coordinates keep their names, ranges, defaults, locks. They are clamped to their ranges only
  when asked (``clamp=True``, for limited MuJoCo joints): OpenSim's InverseKinematicsTool stops
  millimetres off exact marker data on a model with clamped coordinates (its bounded assembler
  does not converge), and to exactly the data without them. A joint displacement is
  ``qpos - qpos0`` as in MuJoCo, so a coordinate drives its axis with ``LinearFunction(1, -qpos0)``.
- Dependent joints (metadata ``dependent_joints``, or joint equalities of a plain MJCF read
  as polynomials) become axes driven by the matching OpenSim function (``Constant``,
  ``LinearFunction``, ``PolynomialFunction``, ``PiecewiseLinearFunction``, ``SimmSpline`` for
  both spline types, ``MultiplierFunction``), translational ones wrapped in a
  ``MultiplierFunction`` by the parent body's scale. A function of a coordinate that belongs to
  another joint, and each stage of a ``composite`` function, drive a new coordinate of this
  joint named ``<coordinate>_in_<joint>`` that a ``CoordinateCouplerConstraint`` ties to its
  input (:attr:`OsimBuild.coupled` lists them).
- Markers: every site, at its scaled position plus its offset, named by :func:`marker_name`
  (``/`` is not allowed in OpenSim names: ``bml_movi_87/lasis`` becomes ``bml_movi_87_lasis``).

What is refused (:class:`mjx_biomech.InputError`): free and ball joints (their
rotation-vector coordinates have no exact CustomJoint form; give the model hinges and slides),
a coordinate that drives only stages of composite functions, and names that collide after the
mapping. Not exported: geoms (so OpenSim shows no bones, only frames and markers), actuators,
tendons, contacts, and equalities other than joint couplings.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from converters.opensim_frame import GROUND_QUAT, GROUND_TO_WORLD, xml_numbers
from mjx_biomech.body import functions, scaling
from mjx_biomech.body.rotations import quat_to_mat_np
from mjx_biomech.errors import InputError
from mjx_biomech.io import atomic_write

_INVALID_NAME = re.compile(r"[\\/*+\s]")
_IDENTITY = {"type": "linear", "slope": 1.0, "intercept": 0.0}
_TOLERANCE = 1e-12


def marker_name(site: str) -> str:
    """The OpenSim marker name of MuJoCo site ``site``: ``/``, ``\\``, ``*``, ``+`` and spaces -> ``_``."""
    return _INVALID_NAME.sub("_", site)


def opensim_marker_names(model, marker_set: str | None = None) -> tuple[str, ...]:
    """OpenSim marker names in the order ``model.markers(q, params, marker_set)`` returns them."""
    return tuple(marker_name(model.site_names[i]) for i in model.marker_site_ids(marker_set))


@dataclass(frozen=True)
class OsimBuild:
    """An OpenSim model built from a MuJoCo one.

    Attributes:
        xml: the ``.osim`` text.
        coupled: ``(name, input coordinate, function dict)`` of every coordinate added to carry a
            function across joints; OpenSim's coupler constraints hold ``name = function(input)``.
    """

    xml: str
    coupled: tuple[tuple[str, str, dict], ...] = ()

    def coordinate_values(self, values: dict[str, float]) -> dict[str, float]:
        """Every OpenSim coordinate's value given the model's coordinates by name (coupled ones filled in)."""
        out = dict(values)
        for name, source, fn in self.coupled:
            out[name] = float(functions.build(fn, np)(np.float64(out[source])))
        return out


def _transform(rotation: np.ndarray, translation) -> np.ndarray:
    x = np.eye(4)
    x[:3, :3] = rotation
    x[:3, 3] = translation
    return x


def _xyz_body_fixed(rotation: np.ndarray) -> np.ndarray:
    """Angles (a, b, c) with ``rotation = Rx(a) Ry(b) Rz(c)``: OpenSim's frame ``orientation``."""
    cos_b = np.hypot(rotation[0, 0], rotation[0, 1])
    b = np.arctan2(rotation[0, 2], cos_b)
    if cos_b > 1e-12:
        return np.array([np.arctan2(-rotation[1, 2], rotation[2, 2]), b, np.arctan2(-rotation[0, 1], rotation[0, 0])])
    # Gimbal lock (b = ±90°): only a ± c is defined; take c = 0.
    return np.array([np.arctan2(rotation[2, 1], rotation[1, 1]), b, 0.0])


def _independent(axes: list[np.ndarray], axis: np.ndarray) -> bool:
    return np.linalg.matrix_rank(np.array([*axes, axis]), tol=1e-9) == len(axes) + 1


def _fill_axes(used: list[np.ndarray]) -> list[np.ndarray]:
    """``used`` completed to three independent directions by coordinate axes (for Constant-0 axes)."""
    axes = list(used)
    while len(axes) < 3:
        basis = np.linalg.qr(np.array(axes).T)[0] if axes else np.zeros((3, 0))
        # The coordinate axis farthest from the span of those already chosen.
        axes.append(max(np.eye(3), key=lambda e: np.linalg.norm(e - basis @ (basis.T @ e))))
    return axes


# ----------------------------------------------------------------- function dicts
def _shift_input(fn: dict, a: float) -> dict:
    """``x -> fn(x - a)``, exactly."""
    if a == 0.0 or fn["type"] == "constant":
        return fn
    kind = fn["type"]
    if kind == "linear":
        return {**fn, "intercept": fn["intercept"] - fn["slope"] * a}
    if kind == "polynomial":
        p = np.polynomial.Polynomial(fn["coefficients"][::-1])(np.polynomial.Polynomial([-a, 1.0]))
        coefficients = np.zeros(len(fn["coefficients"]))
        coefficients[: len(p.coef)] = p.coef
        return {**fn, "coefficients": [float(c) for c in coefficients[::-1]]}
    if kind in ("piecewise_linear", "simm_spline", "natural_cubic_spline"):
        return {**fn, "x": [float(x + a) for x in fn["x"]]}
    if kind == "multiplier":
        return {**fn, "function": _shift_input(fn["function"], a)}
    return {**fn, "inner": _shift_input(fn["inner"], a)}  # composite


def _add_output(fn: dict, c: float) -> dict:
    """``x -> fn(x) + c``, exactly."""
    if c == 0.0:
        return fn
    kind = fn["type"]
    if kind == "constant":
        return {**fn, "value": fn["value"] + c}
    if kind == "linear":
        return {**fn, "intercept": fn["intercept"] + c}
    if kind == "polynomial":
        return {**fn, "coefficients": [*fn["coefficients"][:-1], fn["coefficients"][-1] + c]}
    if kind in ("piecewise_linear", "simm_spline", "natural_cubic_spline"):
        return {**fn, "y": [float(y + c) for y in fn["y"]]}
    if kind == "multiplier":
        if fn["scale"] == 0.0:
            return {"type": "constant", "value": c}
        return {**fn, "function": _add_output(fn["function"], c / fn["scale"])}
    return {**fn, "outer": _add_output(fn["outer"], c)}  # composite


def _stages(fn: dict) -> list[dict]:
    """``fn`` as a chain of composite-free functions, innermost first."""
    if fn["type"] == "composite":
        return _stages(fn["inner"]) + _stages(fn["outer"])
    if fn["type"] == "multiplier":
        inner = _stages(fn["function"])
        return inner[:-1] + [{"type": "multiplier", "scale": fn["scale"], "function": inner[-1]}]
    return [fn]


def _function_xml(fn: dict, name: str | None = "function") -> ET.Element:
    kind = fn["type"]
    tags = {"constant": "Constant", "linear": "LinearFunction", "polynomial": "PolynomialFunction",
            "piecewise_linear": "PiecewiseLinearFunction", "simm_spline": "SimmSpline",
            # OpenSim's NaturalCubicSpline is the same function as its SimmSpline (see functions.py).
            "natural_cubic_spline": "SimmSpline", "multiplier": "MultiplierFunction"}
    el = ET.Element(tags[kind])
    if name is not None:
        el.set("name", name)
    if kind == "constant":
        ET.SubElement(el, "value").text = xml_numbers([fn["value"]])
    elif kind == "linear":
        ET.SubElement(el, "coefficients").text = xml_numbers([fn["slope"], fn["intercept"]])
    elif kind == "polynomial":
        ET.SubElement(el, "coefficients").text = xml_numbers(fn["coefficients"])
    elif kind == "multiplier":
        ET.SubElement(el, "function").append(_function_xml(fn["function"], None))
        ET.SubElement(el, "scale").text = xml_numbers([fn["scale"]])
    else:
        ET.SubElement(el, "x").text = xml_numbers(fn["x"])
        ET.SubElement(el, "y").text = xml_numbers(fn["y"])
    return el


# ----------------------------------------------------------------- the tree
@dataclass
class _Axis:
    kind: str  # "translation" | "rotation"
    direction: np.ndarray
    coordinate: str | None
    function: dict


@dataclass
class _Run:
    """One CustomJoint: slides then hinges of one MuJoCo body sharing one anchor."""

    name: str
    slides: list[int] = field(default_factory=list)
    hinges: list[int] = field(default_factory=list)
    anchor: np.ndarray = field(default_factory=lambda: np.zeros(3))


class _Builder:
    def __init__(self, model, params, clamp: bool):
        self.model = model
        self.clamp = clamp
        self.source = model.source
        model.check_params(params)
        self.m = m = model.mj_model
        with jax.enable_x64(True):
            s = self.body_scales = np.asarray(model.body_scales(jnp.asarray(params.scales, jnp.float64)))
        # The static scaling of mjx_biomech.body.scaling (what model.to_mujoco compiles), in float64.
        scaled = scaling.scaled_fields(m, s, np.asarray(params.offsets, dtype=np.float64))
        self.body_pos, self.jnt_pos, self.site_pos = scaled["body_pos"], scaled["jnt_pos"], scaled["site_pos"]
        self.ipos = scaled["body_ipos"]
        self.mass_inertia = list(zip(scaled["body_mass"], scaling.full_inertia(scaled["body_inertia"], scaled["body_iquat"])))
        # OpenSim names are unique within a set (bodies with ground, joints, coordinates, ...).
        self.names: dict[str, set[str]] = {"body": {"ground"}}
        self.coordinate_of_joint = {c.qposadr: c for c in model.coordinates if c.kind == "joint"}
        self.dependent_of_joint = {d.joint_id: d for d in model.dependents}
        for c in model.coordinates:
            if c.kind in ("free", "ball"):
                raise InputError(f"{self.source}: coordinate {c.name!r} belongs to a {c.kind} joint; its rotation vector has "
                                 "no exact OpenSim CustomJoint form (model the joint with hinges and slides)")
        self.ranges = {c.name: (c.range, c.default) for c in model.coordinates}
        self.owner: dict[str, str] = {}
        self.coupled: list[tuple[str, str, dict]] = []
        self.coupled_names: dict[tuple[str, str, str], str] = {}
        self.joint_coordinates: dict[str, list[ET.Element]] = {}

    def error(self, what: str) -> InputError:
        return InputError(f"{self.source}: {what}")

    def unique(self, kind: str, name: str, what: str) -> str:
        taken = self.names.setdefault(kind, set())
        if name in taken:
            raise self.error(f"{what}: the OpenSim {kind} name {name!r} is already taken")
        taken.add(name)
        return name

    def is_ground(self, b: int) -> bool:
        """A massless, jointless world child at the OpenSim ground frame (the converter's ground body)."""
        m = self.m
        return (m.body_parentid[b] == 0 and m.body_jntnum[b] == 0 and m.body_mass[b] == 0
                and np.allclose(m.body_pos[b], 0.0, rtol=0, atol=_TOLERANCE)
                and np.allclose(m.body_quat[b], GROUND_QUAT, rtol=0, atol=_TOLERANCE))

    def runs(self, b: int, body: str) -> list[_Run]:
        m = self.m
        runs: list[_Run] = []
        current = None
        for j in range(m.body_jntadr[b], m.body_jntadr[b] + m.body_jntnum[b]):
            axis = np.asarray(m.jnt_axis[j], dtype=float)
            if m.jnt_type[j] == mujoco.mjtJoint.mjJNT_SLIDE:
                fits = current is not None and not current.hinges and _independent(
                    [m.jnt_axis[i] for i in current.slides], axis)
                if not fits:
                    current = _Run(f"{body}_joint")
                    runs.append(current)
                current.slides.append(j)
            elif m.jnt_type[j] == mujoco.mjtJoint.mjJNT_HINGE:
                anchor = self.jnt_pos[j]
                fits = current is not None and _independent([m.jnt_axis[i] for i in current.hinges], axis) and (
                    not current.hinges or np.array_equal(anchor, current.anchor))
                if not fits:
                    current = _Run(f"{body}_joint")
                    runs.append(current)
                current.hinges.append(j)
                current.anchor = anchor
            else:
                raise self.error(f"joint {m.joint(j).name!r} of body {body!r} is a free or ball joint, which has no exact "
                                 "OpenSim CustomJoint form")
        if len(runs) > 1:
            for k, run in enumerate(runs[:-1]):
                run.name = f"{body}_link{k}_joint"
        return runs

    def displacement(self, j: int) -> tuple[str | None, dict] | None:
        """(coordinate, function) giving joint ``j``'s displacement ``qpos - qpos0``; None if it never moves."""
        adr = int(self.m.jnt_qposadr[j])
        qpos0 = float(self.m.qpos0[adr])
        if adr in self.coordinate_of_joint:
            c = self.coordinate_of_joint[adr]
            return c.name, {"type": "linear", "slope": 1.0, "intercept": -qpos0}
        d = self.dependent_of_joint.get(j)
        if d is None:
            return None
        fn = d.function
        if d.motion == "translational":
            body = int(self.m.jnt_bodyid[j])
            parent = int(self.m.body_parentid[body])
            k = float(np.linalg.norm(self.body_scales[parent] * (quat_to_mat_np(self.m.body_quat[body]) @ self.m.jnt_axis[j])))
            if k != 1.0:
                fn = {"type": "multiplier", "scale": k, "function": fn}
        fn = _add_output(_shift_input(fn, d.input_offset), d.output_offset - qpos0)
        if d.input is None:
            return None, {"type": "constant", "value": float(functions.build(fn, np)(np.float64(0.0)))}
        return self.model.coordinates[d.input].name, fn

    def assign_owners(self, plan) -> None:
        """Each coordinate belongs to the joint of its MuJoCo joint, else to the first joint it drives directly."""
        for _, _, runs in plan:
            for run in runs:
                for j in run.slides + run.hinges:
                    adr = int(self.m.jnt_qposadr[j])
                    if adr in self.coordinate_of_joint:
                        self.owner[self.coordinate_of_joint[adr].name] = run.name
        for _, _, runs in plan:
            for run in runs:
                for j in run.slides + run.hinges:
                    driven = self.displacement(j)
                    if driven is not None and driven[0] is not None and len(_stages(driven[1])) == 1:
                        self.owner.setdefault(driven[0], run.name)
        for c in self.model.coordinates:
            if c.name not in self.owner:
                raise self.error(f"coordinate {c.name!r} drives no joint axis directly (only stages of composite "
                                 "functions or nothing); OpenSim needs it in a joint")

    def coordinate_xml(self, name: str, default: float, lo: float, hi: float, clamped: bool, locked: bool) -> ET.Element:
        el = ET.Element("Coordinate", name=self.unique("coordinate", name, f"coordinate {name!r}"))
        ET.SubElement(el, "default_value").text = xml_numbers([default])
        ET.SubElement(el, "range").text = xml_numbers([lo, hi])
        ET.SubElement(el, "clamped").text = "true" if clamped else "false"
        ET.SubElement(el, "locked").text = "true" if locked else "false"
        return el

    def couple(self, run: _Run, source: str, fn: dict) -> str:
        """A coordinate of ``run`` held at ``fn(source)`` by a coupler constraint (made once per function)."""
        key = (run.name, source, json.dumps(fn, sort_keys=True))
        if key in self.coupled_names:
            return self.coupled_names[key]
        name = f"{source}_in_{run.name}"
        k = 2
        while name in self.names.get("coordinate", ()):
            name, k = f"{source}_in_{run.name}_{k}", k + 1
        # Range and default: the function's over its input's (informative only: couplers are unclamped).
        (lo, hi), default = self.ranges[source]
        f = functions.build(fn, np)
        values = f(np.linspace(max(lo, -10.0), min(hi, 10.0), 201))
        self.ranges[name] = (float(np.min(values)), float(np.max(values))), float(f(np.float64(default)))
        self.joint_coordinates.setdefault(run.name, []).append(
            self.coordinate_xml(name, self.ranges[name][1], *self.ranges[name][0], False, False))
        self.coupled.append((name, source, fn))
        self.owner[name] = run.name
        self.coupled_names[key] = name
        return name

    def drive(self, run: _Run, coordinate: str | None, fn: dict) -> tuple[str | None, dict]:
        """The coordinate of ``run`` and the composite-free function that drive an axis."""
        if coordinate is None:
            return None, fn
        *inner, outer = _stages(fn)
        for stage in inner:
            coordinate = self.couple(run, coordinate, stage)
        if self.owner[coordinate] != run.name:
            coordinate = self.couple(run, coordinate, _IDENTITY)
        return coordinate, outer

    def axes(self, run: _Run) -> list[_Axis]:
        out = []
        for kind, joints in (("translation", run.slides), ("rotation", run.hinges)):
            for j in joints:
                driven = self.displacement(j)
                if driven is None:
                    continue
                coordinate, fn = self.drive(run, *driven)
                out.append(_Axis(kind, np.asarray(self.m.jnt_axis[j], dtype=float), coordinate, fn))
        return out

    def build(self) -> OsimBuild:
        m = self.m
        root = ET.Element("OpenSimDocument", Version="40600")
        model_name = m.names.split(b"\0", 1)[0].decode()  # MuJoCo stores the model's name first
        model_el = ET.SubElement(root, "Model", name=_INVALID_NAME.sub("_", model_name) or "model")
        ET.SubElement(model_el, "gravity").text = xml_numbers(GROUND_TO_WORLD.T @ m.opt.gravity)
        ET.SubElement(model_el, "Ground", name="ground")
        bodyset = ET.SubElement(ET.SubElement(model_el, "BodySet", name="bodyset"), "objects")
        jointset = ET.SubElement(ET.SubElement(model_el, "JointSet", name="jointset"), "objects")
        constraints = ET.SubElement(ET.SubElement(model_el, "ConstraintSet", name="constraintset"), "objects")
        markers = ET.SubElement(ET.SubElement(model_el, "MarkerSet", name="markerset"), "objects")

        # frame[b]: (OpenSim path of the frame body b is fixed in, 4x4 pose of body b's frame in it)
        frame: dict[int, tuple[str, np.ndarray]] = {0: ("/ground", _transform(GROUND_TO_WORLD.T, np.zeros(3)))}
        plan = []
        for b in range(1, m.nbody):
            if self.is_ground(b):
                frame[b] = ("/ground", np.eye(4))
                continue
            body = _INVALID_NAME.sub("_", m.body(b).name) or f"body{b}"
            plan.append((b, body, self.runs(b, body)))
        self.assign_owners(plan)

        for b, body, runs in plan:
            parent_path, x_parent = frame[int(m.body_parentid[b])]
            x_start = x_parent @ _transform(quat_to_mat_np(m.body_quat[b]), self.body_pos[b])
            names = [f"{body}_link{k}" for k in range(len(runs) - 1)] + [body]
            where = f"body {m.body(b).name!r}"
            for link in names:
                self.unique("body", link, where)
                el = ET.SubElement(bodyset, "Body", name=link)
                mass, inertia = self.mass_inertia[b] if link == body else (0.0, np.zeros((3, 3)))
                ET.SubElement(el, "mass").text = xml_numbers([mass])
                ET.SubElement(el, "mass_center").text = xml_numbers(self.ipos[b] if link == body else np.zeros(3))
                ET.SubElement(el, "inertia").text = xml_numbers([inertia[0, 0], inertia[1, 1], inertia[2, 2],
                                                                 inertia[0, 1], inertia[0, 2], inertia[1, 2]])
            if not runs:
                weld = self.unique("joint", f"{body}_joint", where)
                jointset.append(self.joint_xml("WeldJoint", weld, parent_path, x_start, f"/bodyset/{body}", np.eye(4), None))
            for k, run in enumerate(runs):
                anchor = _transform(np.eye(3), run.anchor)
                jointset.append(self.joint_xml("CustomJoint", self.unique("joint", run.name, where),
                                               parent_path, x_start @ anchor, f"/bodyset/{names[k]}", anchor, run))
                parent_path, x_start = f"/bodyset/{names[k]}", np.eye(4)
            frame[b] = (f"/bodyset/{body}", np.eye(4))

        for name, source, fn in self.coupled:
            coupler = self.unique("constraint", f"{name}_coupler", f"coupler of {name!r}")
            el = ET.SubElement(constraints, "CoordinateCouplerConstraint", name=coupler)
            holder = ET.SubElement(el, "coupled_coordinates_function")
            holder.append(_function_xml(fn, None))
            ET.SubElement(el, "independent_coordinate_names").text = source
            ET.SubElement(el, "dependent_coordinate_name").text = name

        for s in range(m.nsite):
            path, x = frame[int(m.site_bodyid[s])]
            name = marker_name(m.site(s).name or f"site{s}")
            el = ET.SubElement(markers, "Marker", name=self.unique("marker", name, f"site {m.site(s).name!r}"))
            ET.SubElement(el, "socket_parent_frame").text = path
            ET.SubElement(el, "location").text = xml_numbers(x[:3, :3] @ self.site_pos[s] + x[:3, 3])

        ET.indent(root, "\t")
        xml = '<?xml version="1.0" encoding="UTF-8" ?>\n' + ET.tostring(root, encoding="unicode") + "\n"
        return OsimBuild(xml, tuple(self.coupled))

    def joint_xml(self, tag: str, name: str, parent_path: str, x_parent: np.ndarray, child_path: str,
                  x_child: np.ndarray, run: _Run | None) -> ET.Element:
        el = ET.Element(tag, name=name)
        ET.SubElement(el, "socket_parent_frame").text = "parent_offset"
        ET.SubElement(el, "socket_child_frame").text = "child_offset"
        axes = self.axes(run) if run is not None else []
        coordinates = ET.SubElement(el, "coordinates")
        if run is not None:
            for j in run.slides + run.hinges:
                c = self.coordinate_of_joint.get(int(self.m.jnt_qposadr[j]))
                if c is not None:
                    self.own_coordinate(coordinates, c, self.clamp and bool(self.m.jnt_limited[j]))
            for c in self.model.coordinates:
                if c.kind == "none" and self.owner[c.name] == name:
                    self.own_coordinate(coordinates, c, False)
            coordinates.extend(self.joint_coordinates.get(name, []))
        frames = ET.SubElement(el, "frames")
        for frame_name, path, x in (("parent_offset", parent_path, x_parent), ("child_offset", child_path, x_child)):
            f = ET.SubElement(frames, "PhysicalOffsetFrame", name=frame_name)
            ET.SubElement(f, "socket_parent").text = path
            ET.SubElement(f, "translation").text = xml_numbers(x[:3, 3])
            ET.SubElement(f, "orientation").text = xml_numbers(_xyz_body_fixed(x[:3, :3]))
        if run is not None:
            transform = ET.SubElement(el, "SpatialTransform")
            for kind in ("rotation", "translation"):
                used = [a for a in axes if a.kind == kind]
                directions = _fill_axes([a.direction / np.linalg.norm(a.direction) for a in used])
                for k in range(3):
                    axis = ET.SubElement(transform, "TransformAxis", name=f"{kind}{k + 1}")
                    a = used[k] if k < len(used) else None
                    ET.SubElement(axis, "coordinates").text = a.coordinate if a is not None and a.coordinate else ""
                    ET.SubElement(axis, "axis").text = xml_numbers(directions[k])
                    axis.append(_function_xml(a.function if a is not None else {"type": "constant", "value": 0.0}))
        return el

    def own_coordinate(self, coordinates: ET.Element, c, clamped: bool) -> None:
        coordinates.append(self.coordinate_xml(c.name, c.default, c.range[0], c.range[1], clamped, c.locked))


def build(model, params, clamp: bool = False) -> OsimBuild:
    """The OpenSim model of ``model`` scaled by ``params`` (a ``BodyParams``); see the module docstring.

    ``clamp``: clamp the coordinates of limited MuJoCo joints to their ranges in OpenSim.
    """
    return _Builder(model, params, clamp).build()


def export(model, params, path: str | Path, clamp: bool = False) -> Path:
    """Write :func:`build`'s ``.osim`` to ``path`` (atomically); return the path."""
    built = build(model, params, clamp)
    with atomic_write(path) as f:
        f.write(built.xml)
    return Path(path)
