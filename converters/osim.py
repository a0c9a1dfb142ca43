"""OpenSim ``.osim`` ⇄ MuJoCo MJCF, exactly.

:func:`to_mjcf` turns an OpenSim 4 model into one MJCF file whose forward kinematics equal
OpenSim's. Every OpenSim joint becomes a MuJoCo body placed at the joint's parent frame,
carrying slide joints (translations along parent-frame axes) then hinge joints (body-fixed
rotations); when the joint's child frame is not the child body's own frame, the OpenSim body
hangs below that joint body at the inverse of the child offset. A coordinate whose axis
function is the identity becomes the MuJoCo joint named after it; every other axis becomes a
dependent joint whose value is its exact function of one coordinate, kept in the metadata
(``docs/model_format.md``) and, fitted by a polynomial, as a joint equality for MuJoCo's
dynamics. The whole tree hangs under the ground body, turned +90° about X, because OpenSim is
Y-up and MuJoCo Z-up: OpenSim ground point ``p`` is world point ``(p_x, -p_z, p_y)``.

:func:`export` writes a model back to ``.osim``, scaled.
"""

from __future__ import annotations

import hashlib
import json
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import mujoco
import numpy as np

from converters.opensim_frame import GROUND_QUAT, xml_numbers, y_up_to_z_up
from converters.osim_export import export
from converters.osim_parse import Axis, Joint, OsimModel, read_osim
from mjx_biomech.body import functions
from mjx_biomech.body.metadata import METADATA_NAME
from mjx_biomech.errors import InputError
from mjx_biomech.io import write_text_atomic

__all__ = ["export", "to_mjcf"]

_MESH_FORMATS = (".stl", ".obj", ".msh")
_EQUALITY_DEGREE = 4  # MuJoCo joint equalities hold a quartic


def _quat(rotation: np.ndarray) -> np.ndarray:
    quat = np.empty(4)
    mujoco.mju_mat2Quat(quat, np.ascontiguousarray(rotation, dtype=float).ravel())
    return quat


def _place(el: ET.Element, transform: np.ndarray) -> None:
    if np.any(transform[:3, 3] != 0):
        el.set("pos", xml_numbers(transform[:3, 3]))
    if not np.array_equal(transform[:3, :3], np.eye(3)):
        el.set("quat", xml_numbers(_quat(transform[:3, :3])))


def _inverse(transform: np.ndarray) -> np.ndarray:
    inv = np.eye(4)
    inv[:3, :3] = transform[:3, :3].T
    inv[:3, 3] = -transform[:3, :3].T @ transform[:3, 3]
    return inv


def _physical_inertia(inertia) -> bool:
    xx, yy, zz, xy, xz, yz = inertia
    principal = np.linalg.eigvalsh([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    tolerance = 1e-12 * max(1.0, float(np.max(np.abs(principal))))
    return bool(principal[0] >= -tolerance and principal[0] + principal[1] >= principal[2] - tolerance)


def _is_identity(fn: dict) -> bool:
    return fn["type"] == "linear" and fn["slope"] == 1.0 and fn["intercept"] == 0.0


def _compose(outer: dict, inner: dict) -> dict:
    if _is_identity(outer):
        return inner
    if _is_identity(inner):
        return outer
    return {"type": "composite", "outer": outer, "inner": inner}


def _couplings(model: OsimModel) -> dict[str, tuple[str, dict]]:
    """Coupled coordinate -> (independent coordinate it follows, function), chains resolved."""
    direct = {c.dependent: (c.independent, c.function) for c in model.couplers}
    resolved = {}
    for name in direct:
        seen, (source, fn) = {name}, direct[name]
        while source in direct:
            if source in seen:
                raise InputError(f"{model.path}: <ConstraintSet>: coordinate couplers form a cycle through {source!r}")
            seen.add(source)
            fn = _compose(fn, direct[source][1])
            source = direct[source][0]
        resolved[name] = (source, fn)
    return resolved


def _motion(joint: Joint, coordinate: str) -> str:
    kinds = {a.kind for a in joint.axes if a.coordinate == coordinate}
    return "rotational" if "rotation" in kinds or not kinds else "translational"


def _find_mesh(model: OsimModel, name: str) -> Path | None:
    folder = model.path.parent
    for candidate in (folder / name, folder / "Geometry" / name, folder.parent / "Geometry" / name):
        if candidate.is_file():
            return candidate.resolve()
    return None


class _Builder:
    def __init__(self, model: OsimModel):
        self.model = model
        self.couplings = _couplings(model)
        self.root = ET.Element("mujoco", model=model.name)
        ET.SubElement(self.root, "compiler", angle="radian", inertiafromgeom="false", autolimits="true")
        g = model.gravity
        ET.SubElement(self.root, "option", gravity=xml_numbers(y_up_to_z_up(g)))
        self.asset = ET.SubElement(self.root, "asset")
        world = ET.SubElement(self.root, "worldbody")
        self.bodies: dict[str, ET.Element] = {}
        ground = ET.SubElement(world, "body", name=model.ground, quat=xml_numbers(GROUND_QUAT))
        self.bodies["/ground"] = ground
        self.names = {model.ground}
        self.coordinates: list[dict] = []
        self.coordinate_index: dict[str, dict] = {}
        self.dependents: list[dict] = []
        self.frame_bodies: dict[str, str] = {}
        self.joint_ranges: dict[str, tuple[float, float]] = {}
        self.children: dict[str, list[Joint]] = {}
        for joint in model.joints:
            self.children.setdefault(model.frame_in_base(joint.parent_frame)[0], []).append(joint)
            for c in joint.coordinates:
                if c.name in self.couplings:
                    continue
                entry = {"name": c.name, "joint": None, "motion": _motion(joint, c.name),
                         "range": [c.range[0], c.range[1]], "default": c.default, "locked": c.locked,
                         "clamped": c.clamped}
                self.coordinates.append(entry)
                self.coordinate_index[c.name] = entry
                self.joint_ranges[c.name] = c.range
        self._emit_children("/ground")

    def _unique(self, name: str, what: str) -> str:
        if name in self.names:
            raise InputError(f"{self.model.path}: {what}: the MuJoCo name {name!r} is already taken")
        self.names.add(name)
        return name

    def _emit_children(self, base: str) -> None:
        for joint in self.children.get(base, []):
            self._emit_joint(self.bodies[base], joint)

    def _emit_joint(self, parent: ET.Element, joint: Joint) -> None:
        model = self.model
        _, x_pf = model.frame_in_base(joint.parent_frame)
        child, x_bm = model.frame_in_base(joint.child_frame)
        child_name = model.body_name(child)
        if np.array_equal(x_bm, np.eye(4)):
            holder = body = ET.SubElement(parent, "body", name=self._unique(child_name, f"body {child_name!r}"))
        else:
            frame_name = self._unique(f"{joint.name}_child_frame", f"joint {joint.name!r}")
            self.frame_bodies[child_name] = frame_name
            holder = ET.SubElement(parent, "body", name=frame_name)
            body = None
        _place(holder, x_pf)
        for axis in joint.axes:
            self._emit_axis(holder, joint, axis)
        if body is None:
            body = ET.SubElement(holder, "body", name=self._unique(child_name, f"body {child_name!r}"))
            _place(body, _inverse(x_bm))
        self.bodies[child] = body
        b = model.bodies[child_name]
        if not _physical_inertia(b.inertia):
            # OpenSim accepts such tensors; MuJoCo needs a physically possible one.
            warnings.warn(f"{model.path}: <Body name={child_name!r}> inertia {list(b.inertia)} violates the triangle "
                          "inequality; MuJoCo's balanceinertia adjusts it (the .osim keeps the original)", stacklevel=4)
            self.root.find("compiler").set("balanceinertia", "true")
        inertial = ET.SubElement(body, "inertial", pos=xml_numbers(b.mass_center), mass=repr(float(b.mass)))
        if any(b.inertia[3:]):
            inertial.set("fullinertia", xml_numbers(b.inertia))
        else:
            inertial.set("diaginertia", xml_numbers(b.inertia[:3]))
        self._emit_children(child)

    def _emit_axis(self, holder: ET.Element, joint: Joint, axis: Axis) -> None:
        kind = "hinge" if axis.kind == "rotation" else "slide"
        coordinate, fn = axis.coordinate, axis.function
        if coordinate in self.couplings:
            coordinate, inner = self.couplings[coordinate]
            fn = _compose(fn, inner)
        entry = self.coordinate_index.get(coordinate)
        if entry is not None and entry["joint"] is None and _is_identity(fn) and axis.coordinate == coordinate:
            name = self._unique(coordinate, f"coordinate {coordinate!r}")
            entry["joint"] = name
            el = ET.SubElement(holder, "joint", name=name, type=kind, axis=xml_numbers(axis.direction))
            lo, hi = self.joint_ranges[coordinate]
            if any(c.name == coordinate and c.clamped for c in joint.coordinates):
                el.set("range", xml_numbers((lo, hi)))
            return
        name = self._unique(f"{joint.name}_{axis.name}", f"joint {joint.name!r} axis {axis.name!r}")
        ET.SubElement(holder, "joint", name=name, type=kind, axis=xml_numbers(axis.direction))
        self.dependents.append({"joint": name, "input": coordinate,
                                "motion": "rotational" if kind == "hinge" else "translational", "function": fn})

    def emit_sites_and_geoms(self) -> None:
        model = self.model
        for marker in model.markers:
            base, x = model.frame_in_base(marker.frame)
            pos = x[:3, :3] @ np.asarray(marker.location) + x[:3, 3]
            ET.SubElement(self.bodies[base], "site", name=self._unique(marker.name, f"<Marker name={marker.name!r}>"),
                          pos=xml_numbers(pos), size="0.008", rgba="1 0.2 0.2 1")
        for i, geometry in enumerate(model.geometry):
            base, x = model.frame_in_base(geometry.frame)
            p = geometry.params
            scale = np.asarray(p["scale"])
            attrs = {"contype": "0", "conaffinity": "0", "group": "1"}
            if geometry.kind == "Mesh":
                found = _find_mesh(model, p["file"])
                if found is None or found.suffix.lower() not in _MESH_FORMATS:
                    why = "not found next to the model or in its Geometry folder" if found is None else \
                        f"MuJoCo reads only {', '.join(_MESH_FORMATS)} meshes"
                    warnings.warn(f"{model.path}: skipping mesh {p['file']!r} of {geometry.frame!r}: {why}", stacklevel=3)
                    continue
                mesh = f"mesh{i}_{found.stem}"
                ET.SubElement(self.asset, "mesh", name=mesh, file=str(found), scale=xml_numbers(scale))
                attrs.update(type="mesh", mesh=mesh)
            elif geometry.kind == "Sphere":
                if not np.all(scale == scale[0]):
                    raise InputError(f"{model.path}: Sphere {p['name']!r} on {geometry.frame!r}: expected equal scale factors")
                attrs.update(type="sphere", size=xml_numbers([p["radius"] * scale[0]]))
            elif geometry.kind == "Ellipsoid":
                attrs.update(type="ellipsoid", size=xml_numbers(np.asarray(p["radii"]) * scale))
            elif geometry.kind == "Brick":
                attrs.update(type="box", size=xml_numbers(np.asarray(p["half_lengths"]) * scale))
            elif geometry.kind == "Cylinder":
                if scale[0] != scale[2]:
                    raise InputError(f"{model.path}: Cylinder {p['name']!r} on {geometry.frame!r}: expected equal x and z scale factors")
                # OpenSim cylinders lie along their frame's Y axis, MuJoCo's along Z.
                turn = np.eye(4)
                turn[:3, :3] = [[1, 0, 0], [0, 0, -1], [0, 1, 0]]
                x = x @ turn
                attrs.update(type="cylinder", size=xml_numbers((p["radius"] * scale[0], p["half_height"] * scale[1])))
            geom = ET.SubElement(self.bodies[base], "geom", **attrs)
            _place(geom, x)

    def emit_equalities(self) -> None:
        """Joint equalities so MuJoCo's dynamics follow the coordinate functions (quartic fits)."""
        equality = ET.SubElement(self.root, "equality")
        representative = {c["name"]: (c["joint"], None) for c in self.coordinates if c["joint"] is not None}
        for dep in self.dependents:
            fn = dep["function"]
            if dep["input"] is not None and dep["input"] not in representative and fn["type"] == "linear" and fn["slope"] != 0:
                representative[dep["input"]] = (dep["joint"], fn)
        for dep in self.dependents:
            fn = functions.build(dep["function"], np)
            if dep["input"] is None:
                ET.SubElement(equality, "joint", joint1=dep["joint"], polycoef=xml_numbers([float(fn(0.0)), 0, 0, 0, 0]))
                continue
            joint2, through = representative.get(dep["input"], (None, None))
            if joint2 is None or joint2 == dep["joint"]:
                continue
            lo, hi = np.clip(self.joint_ranges[dep["input"]], -10.0, 10.0)
            x = np.linspace(lo, hi, 200)
            q2 = x if through is None else through["slope"] * x + through["intercept"]
            coef = np.polynomial.polynomial.polyfit(q2, fn(x), _EQUALITY_DEGREE)
            ET.SubElement(equality, "joint", joint1=dep["joint"], joint2=joint2, polycoef=xml_numbers(coef))
        if len(equality) == 0:
            self.root.remove(equality)

    def metadata(self) -> dict:
        model = self.model
        groups = [{"name": name, "bodies": [name] + ([self.frame_bodies[name]] if name in self.frame_bodies else []),
                   "per_axis": False} for name in model.bodies]
        # Explicit, so that ground stays unscaled as in OpenSim's ScaleTool.
        groups.insert(0, {"name": "overall", "bodies": [b for g in groups for b in g["bodies"]], "per_axis": False})
        return {
            "format": "mjx_biomech/1",
            "coordinates": self.coordinates,
            "dependent_joints": self.dependents,
            "scale_groups": groups,
            "marker_sets": {"opensim": {m.name: m.name for m in model.markers}},
            "opensim": {
                "source": str(model.path.resolve()),
                "sha256": hashlib.sha256(model.path.read_bytes()).hexdigest(),
                "ground": model.ground,
                "frame_bodies": self.frame_bodies,
                "coupled_coordinates": [{"name": name, "input": source, "function": fn}
                                        for name, (source, fn) in self.couplings.items()],
            },
        }


def to_mjcf(osim_path: str | Path, out_path: str | Path | None = None) -> str:
    """Convert the OpenSim model at ``osim_path`` to MJCF; return the XML text.

    When ``out_path`` is given the text is also written there (atomically). Unsupported
    elements raise :class:`mjx_biomech.InputError` naming the file and the element.
    """
    model = read_osim(osim_path)
    builder = _Builder(model)
    builder.emit_sites_and_geoms()
    builder.emit_equalities()
    if len(builder.asset) == 0:
        builder.root.remove(builder.asset)
    custom = ET.SubElement(builder.root, "custom")
    ET.SubElement(custom, "text", name=METADATA_NAME, data=json.dumps(builder.metadata(), separators=(",", ":")))
    ET.indent(builder.root)
    xml = ET.tostring(builder.root, encoding="unicode")
    try:
        mujoco.MjModel.from_xml_string(xml)
    except ValueError as exc:
        raise InputError(f"{osim_path}: MuJoCo rejects the converted model: {exc}") from None
    if out_path is not None:
        write_text_atomic(out_path, xml)
    return xml


def load_spec(osim_path: str | Path) -> mujoco.MjSpec:
    """The ``MjSpec`` of the converted model: the loader ``mjx_biomech.load_model`` uses for ``.osim``
    (registered as the ``osim`` entry point of ``mjx_biomech.model_loaders``)."""
    xml = to_mjcf(osim_path)
    try:
        return mujoco.MjSpec.from_string(xml)
    except ValueError as e:
        raise InputError(f"{osim_path}: the converted MJCF does not parse: {e}") from e
