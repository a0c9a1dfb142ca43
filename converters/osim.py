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

What MuJoCo cannot take as it is, converted so that kinematics stay exact, each with one warning:

- A moving body (its joint has a degree of freedom) whose mass or a principal moment of inertia
  is below ``LIGHTEST`` (point masses, massless links) gets ``LIGHTEST`` there: MuJoCo refuses
  moving bodies below 1e-15 (mjMINVAL), and ``LIGHTEST`` stays above that when the body is
  scaled down to a tenth (inertia scales by s⁵).
- Constraints other than coordinate couplers (``WeldConstraint``, ``PointOnLineConstraint``, ...)
  are listed in the metadata (``opensim.unenforced_constraints``); MuJoCo's dynamics do not
  enforce them, and positions for given coordinates are OpenSim's, constraints or not.
- Coordinates OpenSim prescribes as a function of time are free coordinates, listed in
  ``opensim.prescribed_coordinates``.
- Contact geometry becomes geoms that collide with nothing, in geom group 3 and named after it
  (``ContactSphere``: sphere, ``ContactHalfSpace``: plane, ``ContactMesh``: mesh); contact forces
  are not converted. Other contact geometry is skipped.
- Meshes are found next to the model, in its ``Geometry`` folder or in ``../Geometry``; those
  missing or in a format MuJoCo does not read (``.vtp``) are skipped, in one warning that says
  how many and where they were looked for.

A model that cannot be converted exactly (a joint or function type with no MuJoCo form) raises
:class:`~mjx_biomech.InputError` naming the element.

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
from converters.osim_parse import CONTACT_GEOMETRY, Axis, Geometry, Joint, OsimModel, read_osim
from mjx_biomech.body import functions
from mjx_biomech.body.metadata import METADATA_NAME
from mjx_biomech.body.static_model import relocate_assets
from mjx_biomech.errors import InputError
from mjx_biomech.io import write_text_atomic

__all__ = ["LIGHTEST", "export", "to_mjcf"]

_MESH_FORMATS = (".stl", ".obj", ".msh")
_EQUALITY_DEGREE = 4  # MuJoCo joint equalities hold a quartic
LIGHTEST = 1e-10  # kg and kg m^2: the least mass and principal moment a moving body is given


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


def _turn(rotation) -> np.ndarray:
    turn = np.eye(4)
    turn[:3, :3] = rotation
    return turn


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


def _mesh_folders(model: OsimModel) -> tuple[Path, ...]:
    folder = model.path.parent
    return folder, folder / "Geometry", folder.parent / "Geometry"


def _find_mesh(model: OsimModel, name: str) -> Path | None:
    for folder in _mesh_folders(model):
        candidate = folder / name
        if candidate.is_file():
            return candidate.resolve()
    return None


def _inertial(el: ET.Element, mass: float, mass_center, inertia, moving: bool) -> bool:
    """Write ``<inertial>``; a moving body lighter than LIGHTEST gets LIGHTEST. True if it did."""
    xx, yy, zz, xy, xz, yz = inertia
    moments, axes = np.linalg.eigh([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    light = moving and (mass < LIGHTEST or moments[0] < LIGHTEST)
    mass = max(float(mass), LIGHTEST) if light else float(mass)
    inertial = ET.SubElement(el, "inertial", pos=xml_numbers(mass_center), mass=repr(mass))
    if light:
        if np.linalg.det(axes) < 0:
            axes[:, 0] *= -1
        inertial.set("diaginertia", xml_numbers(np.maximum(moments, LIGHTEST)))
        inertial.set("quat", xml_numbers(_quat(axes)))
    elif any(inertia[3:]):
        inertial.set("fullinertia", xml_numbers(inertia))
    else:
        inertial.set("diaginertia", xml_numbers(inertia[:3]))
    return light


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
        self.light_bodies: list[str] = []
        self.unbalanced: list[str] = []  # bodies whose inertia violates the triangle inequality
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
            self.unbalanced.append(child_name)
            self.root.find("compiler").set("balanceinertia", "true")
        if _inertial(body, b.mass, b.mass_center, b.inertia, moving=len(holder.findall("joint")) > 0):
            self.light_bodies.append(child_name)
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
        unreadable: list[str] = []
        for i, geometry in enumerate(model.geometry):
            shape = self._geom(i, geometry, unreadable)
            if shape is not None:
                self._attach(geometry.frame, *shape)
        skipped = []
        for i, contact in enumerate(model.contact_geometry, start=len(model.geometry)):
            if contact.kind not in CONTACT_GEOMETRY:
                skipped.append(f"{contact.kind} {contact.params['name']!r}")
                continue
            shape = self._contact_geom(i, contact, unreadable)
            if shape is not None:
                shape[0]["name"] = self._unique(contact.params["name"], f"<{contact.kind} name={contact.params['name']!r}>")
                self._attach(contact.frame, *shape)
        if unreadable:
            folders = ", ".join(str(f) for f in _mesh_folders(model))
            warnings.warn(f"{model.path}: skipped {len(unreadable)} mesh{'' if len(unreadable) == 1 else 'es'} not "
                          f"found as {', '.join(_MESH_FORMATS)} files (MuJoCo does not read .vtp) in {folders}: "
                          f"{', '.join(sorted(set(unreadable)))}", stacklevel=3)
        if skipped:
            warnings.warn(f"{model.path}: skipped {len(skipped)} contact geometries MuJoCo has no geom for: "
                          f"{', '.join(skipped)}", stacklevel=3)

    def _attach(self, frame: str, attrs: dict, local: np.ndarray) -> None:
        """A geom with ``attrs`` at pose ``local`` (4x4) in OpenSim frame ``frame``."""
        base, x = self.model.frame_in_base(frame)
        geom = ET.SubElement(self.bodies[base], "geom", **attrs)
        _place(geom, x @ local)

    def _mesh(self, i: int, file: str, scale, unreadable: list[str]) -> dict | None:
        found = _find_mesh(self.model, file)
        if found is None or found.suffix.lower() not in _MESH_FORMATS:
            unreadable.append(file)
            return None
        mesh = f"mesh{i}_{found.stem}"
        ET.SubElement(self.asset, "mesh", name=mesh, file=str(found), scale=xml_numbers(scale))
        return {"type": "mesh", "mesh": mesh}

    def _geom(self, i: int, geometry: Geometry, unreadable: list[str]) -> tuple[dict, np.ndarray] | None:
        """The attributes of the (visual) geom of attached geometry and its pose in the frame; None if skipped."""
        p = geometry.params
        scale = np.asarray(p["scale"])
        attrs, local = {"contype": "0", "conaffinity": "0", "group": "1"}, np.eye(4)
        where = f"{self.model.path}: {geometry.kind} {p['name']!r} on {geometry.frame!r}"
        if geometry.kind == "Mesh":
            shape = self._mesh(i, p["file"], scale, unreadable)
            if shape is None:
                return None
            attrs.update(shape)
        elif geometry.kind == "Sphere":
            if not np.all(scale == scale[0]):
                raise InputError(f"{where}: expected equal scale factors")
            attrs.update(type="sphere", size=xml_numbers([p["radius"] * scale[0]]))
        elif geometry.kind == "Ellipsoid":
            attrs.update(type="ellipsoid", size=xml_numbers(np.asarray(p["radii"]) * scale))
        elif geometry.kind == "Brick":
            attrs.update(type="box", size=xml_numbers(np.asarray(p["half_lengths"]) * scale))
        elif geometry.kind == "Cylinder":
            if scale[0] != scale[2]:
                raise InputError(f"{where}: expected equal x and z scale factors")
            # OpenSim cylinders lie along their frame's Y axis, MuJoCo's along Z.
            attrs.update(type="cylinder", size=xml_numbers((p["radius"] * scale[0], p["half_height"] * scale[1])))
            local = _turn([[1, 0, 0], [0, 0, -1], [0, 1, 0]])
        return attrs, local

    def _contact_geom(self, i: int, contact: Geometry, unreadable: list[str]) -> tuple[dict, np.ndarray] | None:
        """The attributes of the geom of contact geometry (collides with nothing, group 3) and its
        pose in the frame; None if skipped."""
        attrs, local = {"contype": "0", "conaffinity": "0", "group": "3"}, contact.params["transform"]
        if contact.kind == "ContactSphere":
            attrs.update(type="sphere", size=xml_numbers([contact.params["radius"]]))
        elif contact.kind == "ContactHalfSpace":
            # OpenSim's half-space is x > 0 of its frame, its surface facing -x; a MuJoCo plane faces +z.
            attrs.update(type="plane", size="0 0 1")
            local = local @ _turn([[0, 0, -1], [0, 1, 0], [1, 0, 0]])
        else:
            shape = self._mesh(i, contact.params["file"], np.ones(3), unreadable)
            if shape is None:
                return None
            attrs.update(shape)
        return attrs, local

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
                "unenforced_constraints": [{"name": c.name, "type": c.type} for c in model.constraints],
                "prescribed_coordinates": list(model.prescribed),
                "lightened_bodies": self.light_bodies,
            },
        }

    def warn(self) -> None:
        """One warning per kind of change that MuJoCo needed (see the module docstring)."""
        model = self.model
        if self.unbalanced:
            warnings.warn(f"{model.path}: bodies {self.unbalanced} have inertias that violate the triangle inequality; "
                          "MuJoCo's balanceinertia adjusts them (the .osim keeps the originals)", stacklevel=3)
        if self.light_bodies:
            warnings.warn(f"{model.path}: moving bodies {self.light_bodies} have a mass or principal moment of "
                          f"inertia below {LIGHTEST}, which MuJoCo refuses; they get {LIGHTEST} kg or kg m^2 there "
                          "(kinematics unchanged)", stacklevel=3)
        if model.constraints:
            listed = ", ".join(f"{c.type} {c.name!r}" for c in model.constraints)
            warnings.warn(f"{model.path}: constraints MuJoCo's dynamics will not enforce (kept in the metadata; "
                          f"positions for given coordinates are exact): {listed}", stacklevel=3)
        if model.prescribed:
            warnings.warn(f"{model.path}: coordinates OpenSim prescribes as functions of time are free coordinates "
                          f"in MuJoCo: {model.prescribed}", stacklevel=3)


def to_mjcf(osim_path: str | Path, out_path: str | Path | None = None) -> str:
    """Convert the OpenSim model at ``osim_path`` to MJCF; return the XML text.

    Without ``out_path`` meshes are referenced by absolute path. With ``out_path`` the text is
    written there (atomically), its meshes copied into ``<out stem>_assets/`` beside it and
    referenced relative to it (so the folder can move), and that text is returned.
    Unsupported elements raise :class:`mjx_biomech.InputError` naming the file and the element.
    """
    model = read_osim(osim_path)
    builder = _Builder(model)
    builder.emit_sites_and_geoms()
    builder.emit_equalities()
    builder.warn()
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
    if out_path is None:
        return xml
    if relocate_assets(builder.root, model.path.parent, out_path):
        xml = ET.tostring(builder.root, encoding="unicode")
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
