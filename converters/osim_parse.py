"""Read an OpenSim ``.osim`` file (plain XML, no opensim install needed) into plain tables.

What the kinematic conversion needs is kept: bodies (mass properties, attached geometry),
frames (ground, bodies, physical offset frames, resolved to a fixed transform in a body),
joints as ordered lists of translation/rotation axes each driven by a coordinate through a
function, coordinate-coupler constraints, other constraints (by type and name: they do not
change where a body is for given coordinates), contact geometry, and markers. Anything that
changes where a body or marker is and that this reader does not understand raises
:class:`InputError` naming it; so do malformed numbers (NaN and infinities included),
references to frames that do not exist or that form a cycle, and nesting deeper than
``MAX_DEPTH``.

Element names are read as OpenSim reads them, without XML namespaces (OpenSim writes names
such as ``<HuntCrossleyForce::ContactParametersSet>``). OpenSim 3 and older files
(``Version`` below 40000) are upgraded by OpenSim itself (load, write to a temporary file),
which needs the ``opensim`` package.
"""

from __future__ import annotations

import os
import posixpath
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from xml.parsers import expat

import numpy as np

from mjx_biomech.body import functions
from mjx_biomech.errors import InputError

# Absent properties take OpenSim 4.6's defaults (it writes only the properties that differ).
# Kinematically inert parts of a model: forces, muscles, controllers, probes, contact geometry.
_IGNORED_SETS = {
    "ForceSet", "ControllerSet", "ProbeSet", "ContactGeometrySet", "ComponentSet", "AnalysisSet",
}
# Attached geometry with a MuJoCo geom; the rest (frame axes, arrows, lines, ...) only OpenSim draws.
_GEOMETRY = {"Mesh", "Sphere", "Cylinder", "Brick", "Ellipsoid"}
_FUNCTIONS = {
    "Constant", "LinearFunction", "PolynomialFunction", "SimmSpline", "NaturalCubicSpline",
    "PiecewiseLinearFunction", "MultiplierFunction",
}
# Contact geometry MuJoCo has a geom for; other kinds are counted in one warning and skipped.
CONTACT_GEOMETRY = {"ContactSphere", "ContactHalfSpace", "ContactMesh"}
# Deepest nesting read: XML elements, and joints from ground to a body. Far beyond real models
# (Rajagopal2016: 11 elements, 6 joints; gait2392's subject01: 14 and 6), and shallow enough that
# the recursive XML writers (ElementTree's) never reach Python's recursion limit.
MAX_DEPTH = 200
_OPENSIM_4 = 40000
_KNOWN_UNSUPPORTED_FUNCTIONS = {
    "GCVSpline", "StepFunction", "Sine", "PiecewiseConstantFunction", "ExpressionBasedFunction",
    "MultivariatePolynomialFunction", "SmoothSegmentedFunction", "FunctionAdapter",
}


@dataclass(frozen=True)
class Coordinate:
    name: str
    joint: str
    default: float
    range: tuple[float, float]
    locked: bool
    clamped: bool


@dataclass(frozen=True)
class Axis:
    """One elementary motion of a joint: translation along, or rotation about, ``direction``.

    ``function`` maps the value of ``coordinate`` (None: no coordinate, function constant)
    to the displacement (metres) or angle (radians).
    """

    name: str
    kind: str  # "translation" | "rotation"
    direction: tuple[float, float, float]
    coordinate: str | None
    function: dict


@dataclass(frozen=True)
class Joint:
    name: str
    type: str
    parent_frame: str  # absolute component path
    child_frame: str
    coordinates: tuple[Coordinate, ...]
    axes: tuple[Axis, ...]  # in the order they act: translations (parent frame), then rotations (body-fixed)


@dataclass(frozen=True)
class Geometry:
    kind: str
    frame: str
    params: dict


@dataclass(frozen=True)
class Body:
    name: str
    mass: float
    mass_center: tuple[float, float, float]
    inertia: tuple[float, float, float, float, float, float]  # Ixx Iyy Izz Ixy Ixz Iyz about the COM


@dataclass(frozen=True)
class Coupler:
    name: str
    dependent: str
    independent: str
    function: dict


@dataclass(frozen=True)
class Marker:
    name: str
    frame: str
    location: tuple[float, float, float]


@dataclass(frozen=True)
class Constraint:
    """A constraint the converter does not turn into coordinates (``type``: its OpenSim element)."""

    name: str
    type: str


@dataclass
class OsimModel:
    path: Path
    name: str
    ground: str
    gravity: tuple[float, float, float]
    bodies: dict[str, Body] = field(default_factory=dict)
    # frame path -> (parent frame path or None for ground/bodies, 4x4 transform in the parent)
    frames: dict[str, tuple[str | None, np.ndarray]] = field(default_factory=dict)
    joints: list[Joint] = field(default_factory=list)
    couplers: list[Coupler] = field(default_factory=list)
    markers: list[Marker] = field(default_factory=list)
    geometry: list[Geometry] = field(default_factory=list)
    contact_geometry: list[Geometry] = field(default_factory=list)
    constraints: list[Constraint] = field(default_factory=list)  # enforced, other than couplers
    # Coordinates OpenSim prescribes as a function of time: kept as free coordinates.
    prescribed: list[str] = field(default_factory=list)

    def frame_in_base(self, path: str) -> tuple[str, np.ndarray]:
        """(base path: ground or body, 4x4 transform of the frame in the base)."""
        transform = np.eye(4)
        for _ in range(len(self.frames)):
            parent, x = self.frames[path]
            if parent is None:
                return path, transform
            transform = x @ transform
            path = parent
        raise InputError(f"{self.path}: frame {path!r}: its socket_parent chain forms a cycle")

    def body_name(self, base_path: str) -> str:
        return self.ground if base_path == "/ground" else base_path.rsplit("/", 1)[1]


def euler_xyz_body_fixed(angles) -> np.ndarray:
    """Rotation matrix of OpenSim's frame ``orientation``: body-fixed X, then Y, then Z."""
    a, b, c = angles
    ca, sa, cb, sb, cc, sc = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(c), np.sin(c)
    rx = np.array([[1, 0, 0], [0, ca, -sa], [0, sa, ca]])
    ry = np.array([[cb, 0, sb], [0, 1, 0], [-sb, 0, cb]])
    rz = np.array([[cc, -sc, 0], [sc, cc, 0], [0, 0, 1]])
    return rx @ ry @ rz


class _Reader:
    def __init__(self, path: Path):
        self.path = path

    def error(self, element: str, expected: str) -> InputError:
        return InputError(f"{self.path}: {element}: {expected}")

    @staticmethod
    def describe(el: ET.Element) -> str:
        name = el.get("name")
        return f"<{el.tag} name={name!r}>" if name is not None else f"<{el.tag}>"

    def name(self, el: ET.Element, where: str) -> str:
        name = el.get("name")
        if not name or not name.strip():
            raise self.error(where, "expected a non-empty name attribute")
        return name

    def text(self, el: ET.Element, tag: str, where: str, default: str | None = None) -> str:
        child = el.find(tag)
        if child is None or child.text is None or not child.text.strip():
            if default is not None:
                return default
            raise self.error(where, f"expected a <{tag}> value")
        return child.text.strip()

    def floats(self, el: ET.Element, tag: str, where: str, count: int | None = None, default: str | None = None):
        raw = self.text(el, tag, where, default)
        try:
            values = [float(v) for v in raw.split()]
        except ValueError:
            raise self.error(f"{where} <{tag}>", f"expected numbers, got {raw!r}") from None
        if count is not None and len(values) != count:
            raise self.error(f"{where} <{tag}>", f"expected {count} numbers, got {raw!r}")
        if not np.all(np.isfinite(values)):
            raise self.error(f"{where} <{tag}>", f"expected finite numbers, got {raw!r}")
        return values

    def flag(self, el: ET.Element, tag: str, where: str, default: str = "false") -> bool:
        raw = self.text(el, tag, where, default).lower()
        if raw not in ("true", "false"):
            raise self.error(f"{where} <{tag}>", f"expected true or false, got {raw!r}")
        return raw == "true"

    def function(self, el: ET.Element, where: str) -> dict:
        """The function dict of an OpenSim function element (``el`` is the function itself)."""
        where = f"{where} {self.describe(el)}"
        tag = el.tag
        if tag == "Constant":
            return {"type": "constant", "value": self.floats(el, "value", where, 1, "0")[0]}
        if tag == "LinearFunction":
            slope, intercept = self.floats(el, "coefficients", where, 2, "1 0")
            return {"type": "linear", "slope": slope, "intercept": intercept}
        if tag == "PolynomialFunction":
            return {"type": "polynomial", "coefficients": self.floats(el, "coefficients", where, None, "1")}
        if tag in ("SimmSpline", "NaturalCubicSpline", "PiecewiseLinearFunction"):
            kind = {"SimmSpline": "simm_spline", "NaturalCubicSpline": "natural_cubic_spline",
                    "PiecewiseLinearFunction": "piecewise_linear"}[tag]
            fn = {"type": kind, "x": self.floats(el, "x", where), "y": self.floats(el, "y", where)}
            try:
                functions.build(fn)
            except ValueError as exc:
                raise self.error(where, str(exc)) from None
            return fn
        if tag == "MultiplierFunction":
            inner = self.function_child(el, where)
            return {"type": "multiplier", "scale": self.floats(el, "scale", where, 1, "1")[0], "function": inner}
        if tag in _KNOWN_UNSUPPORTED_FUNCTIONS:
            raise self.error(where, f"function type {tag} is not supported (supported: {sorted(_FUNCTIONS)})")
        raise self.error(where, f"unknown function type {tag} (supported: {sorted(_FUNCTIONS)})")

    def function_child(self, el: ET.Element, where: str) -> dict:
        """The function held by ``el``: a child function element, or one inside ``<function>``."""
        for child in el:
            if child.tag == "function":
                inner = list(child)
                if len(inner) != 1:
                    raise self.error(f"{where} <function>", "expected exactly one function element")
                return self.function(inner[0], where)
            if child.get("name") == "function" or child.tag in _FUNCTIONS or child.tag in _KNOWN_UNSUPPORTED_FUNCTIONS:
                return self.function(child, where)
        raise self.error(where, "expected a function element")


def _resolve(owner: str, ref: str) -> str:
    """Absolute component path of socket path ``ref`` given relative to component ``owner``."""
    joined = ref if ref.startswith("/") else f"{owner}/{ref}"
    return posixpath.normpath(joined)


def _constant_value(fn: dict) -> float | None:
    """The value of a function that ignores its input, else None."""
    if fn["type"] == "constant":
        return fn["value"]
    if fn["type"] == "multiplier":
        inner = _constant_value(fn["function"])
        return None if inner is None else fn["scale"] * inner
    return None


def _unit(reader: _Reader, values, where: str) -> tuple[float, float, float]:
    v = np.asarray(values, dtype=float)
    norm = np.linalg.norm(v)
    if norm == 0:
        raise reader.error(where, "expected a non-zero axis")
    return tuple(float(c) for c in v / norm)


# Axes of the joints that Simbody implements with fixed mobilizers, in the order they act,
# as (axis name, kind, direction, index of the joint's coordinate).
_FIXED_AXES = {
    "WeldJoint": (),
    "PinJoint": (("rz", "rotation", (0, 0, 1), 0),),
    "SliderJoint": (("tx", "translation", (1, 0, 0), 0),),
    "UniversalJoint": (("rx", "rotation", (1, 0, 0), 0), ("ry", "rotation", (0, 1, 0), 1)),
    "GimbalJoint": (("rx", "rotation", (1, 0, 0), 0), ("ry", "rotation", (0, 1, 0), 1), ("rz", "rotation", (0, 0, 1), 2)),
    "BallJoint": (("rx", "rotation", (1, 0, 0), 0), ("ry", "rotation", (0, 1, 0), 1), ("rz", "rotation", (0, 0, 1), 2)),
    "PlanarJoint": (("tx", "translation", (1, 0, 0), 1), ("ty", "translation", (0, 1, 0), 2), ("rz", "rotation", (0, 0, 1), 0)),
    "FreeJoint": (
        ("tx", "translation", (1, 0, 0), 3), ("ty", "translation", (0, 1, 0), 4), ("tz", "translation", (0, 0, 1), 5),
        ("rx", "rotation", (1, 0, 0), 0), ("ry", "rotation", (0, 1, 0), 1), ("rz", "rotation", (0, 0, 1), 2),
    ),
}
SUPPORTED_JOINTS = ("CustomJoint", *_FIXED_AXES)
_IDENTITY = {"type": "linear", "slope": 1.0, "intercept": 0.0}


def _read_frames(reader: _Reader, model: OsimModel, container: ET.Element | None, owner: str,
                 components: bool = True) -> None:
    """The PhysicalOffsetFrames in ``container`` (a joint's ``<frames>``, or any ``<components>``,
    whose other kinds of component do not place anything), and the frames they own."""
    if container is None:
        return
    for el in container:
        where = f"{owner} {reader.describe(el)}"
        if el.tag != "PhysicalOffsetFrame":
            if components:
                continue
            raise reader.error(where, "expected a PhysicalOffsetFrame (other frame types are not supported)")
        path = f"{owner}/{reader.name(el, where)}"
        parent = _resolve(path, reader.text(el, "socket_parent", where))
        x = np.eye(4)
        x[:3, :3] = euler_xyz_body_fixed(reader.floats(el, "orientation", where, 3, "0 0 0"))
        x[:3, 3] = reader.floats(el, "translation", where, 3, "0 0 0")
        model.frames[path] = (parent, x)
        _read_geometry(reader, model, el, path)
        _read_frames(reader, model, el.find("components"), path)


def _read_geometry(reader: _Reader, model: OsimModel, el: ET.Element, frame: str) -> None:
    attached = el.find("attached_geometry")
    if attached is None:
        return
    for g in attached:
        where = f"{frame} {reader.describe(g)}"
        if g.tag not in _GEOMETRY:
            continue
        scale = reader.floats(g, "scale_factors", where, 3, "1 1 1")
        params = {"name": g.get("name") or g.tag, "scale": scale}
        if g.tag == "Mesh":
            params["file"] = reader.text(g, "mesh_file", where)
        elif g.tag == "Sphere":
            params["radius"] = reader.floats(g, "radius", where, 1, "1")[0]
        elif g.tag == "Cylinder":
            params["radius"] = reader.floats(g, "radius", where, 1, "0.5")[0]
            params["half_height"] = reader.floats(g, "half_height", where, 1, "0.5")[0]
        elif g.tag == "Brick":
            params["half_lengths"] = reader.floats(g, "half_lengths", where, 3, "0.1 0.2 0.3")
        elif g.tag == "Ellipsoid":
            params["radii"] = reader.floats(g, "radii", where, 3, "0.5 1 2")
        model.geometry.append(Geometry(g.tag, frame, params))


def _read_coordinate(reader: _Reader, model: OsimModel, el: ET.Element, joint: str) -> Coordinate:
    where = f"joint {joint!r} {reader.describe(el)}"
    name = reader.name(el, where)
    if reader.flag(el, "prescribed", where):
        model.prescribed.append(name)
    lo, hi = reader.floats(el, "range", where, 2, "-10 10")
    if lo > hi:
        raise reader.error(f"{where} <range>", f"expected a minimum no larger than the maximum, got {lo!r} {hi!r}")
    return Coordinate(
        name=name,
        joint=joint,
        default=reader.floats(el, "default_value", where, 1, "0")[0],
        range=(lo, hi),
        locked=reader.flag(el, "locked", where),
        clamped=reader.flag(el, "clamped", where),
    )


def _custom_axes(reader: _Reader, el: ET.Element, name: str, coords: dict[str, Coordinate]) -> tuple[Axis, ...]:
    st = el.find("SpatialTransform")
    if st is None:
        raise reader.error(f"<CustomJoint name={name!r}>", "expected a <SpatialTransform>")
    by_name = {}
    for ta in st:
        if ta.tag != "TransformAxis":
            raise reader.error(f"<CustomJoint name={name!r}> <SpatialTransform>", f"unexpected element <{ta.tag}>")
        by_name[ta.get("name")] = ta
    axes = []
    # Simbody's FunctionBased mobilizer translates along the parent-frame axes first, then
    # rotates about body-fixed axes in order.
    for axis_name in ("translation1", "translation2", "translation3", "rotation1", "rotation2", "rotation3"):
        ta = by_name.get(axis_name)
        if ta is None:
            continue
        where = f"<CustomJoint name={name!r}> <TransformAxis name={axis_name!r}>"
        coordinate_names = reader.text(ta, "coordinates", where, " ").split()
        if len(coordinate_names) > 1:
            raise reader.error(where, f"functions of several coordinates are not supported, got {coordinate_names}")
        fn = reader.function_child(ta, where)
        coordinate = coordinate_names[0] if coordinate_names else None
        if coordinate is not None and coordinate not in coords:
            raise reader.error(where, f"coordinate {coordinate!r} is not one of the joint's {sorted(coords)}")
        constant = _constant_value(fn)
        if coordinate is None and constant is None:
            raise reader.error(where, "a function of no coordinate must be constant")
        if constant is not None:
            if constant == 0.0:
                continue  # an axis that never moves adds nothing
            coordinate, fn = None, {"type": "constant", "value": constant}
        direction = _unit(reader, reader.floats(ta, "axis", where, 3, "1 0 0"), where)
        axes.append(Axis(axis_name, axis_name[:-1], direction, coordinate, fn))
    return tuple(axes)


def _read_joint(reader: _Reader, model: OsimModel, el: ET.Element) -> Joint:
    where = reader.describe(el)
    if el.tag not in SUPPORTED_JOINTS:
        raise reader.error(where, f"unsupported joint type {el.tag}: its kinematics have no exact MuJoCo form "
                           f"(supported: {', '.join(SUPPORTED_JOINTS)})")
    name = reader.name(el, where)
    owner = f"/jointset/{name}"
    _read_frames(reader, model, el.find("frames"), owner, components=False)
    coordinate_list = el.find("coordinates")
    coordinates = tuple(_read_coordinate(reader, model, c, name)
                        for c in (coordinate_list if coordinate_list is not None else []))
    by_name = {c.name: c for c in coordinates}
    if el.tag == "CustomJoint":
        axes = _custom_axes(reader, el, name, by_name)
    else:
        spec = _FIXED_AXES[el.tag]
        expected = len({index for *_, index in spec})
        if len(coordinates) != expected:
            raise reader.error(where, f"expected {expected} coordinates, got {len(coordinates)}")
        axes = tuple(
            Axis(axis_name, kind, tuple(float(v) for v in direction), coordinates[index].name, _IDENTITY)
            for axis_name, kind, direction, index in spec
        )
    return Joint(
        name=name,
        type=el.tag,
        parent_frame=_resolve(owner, reader.text(el, "socket_parent_frame", where)),
        child_frame=_resolve(owner, reader.text(el, "socket_child_frame", where)),
        coordinates=coordinates,
        axes=axes,
    )


def _objects(el: ET.Element | None) -> list[ET.Element]:
    if el is None:
        return []
    objects = el.find("objects")
    return list(objects) if objects is not None else []


class _TreeBuilder:
    """ElementTree elements from expat events, without namespace processing and at most MAX_DEPTH deep."""

    def __init__(self, path: Path, parser):
        self.path, self.parser = path, parser
        self.builder = ET.TreeBuilder()
        self.depth = 0

    def start(self, tag: str, attrs: dict) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise InputError(f"{self.path}, line {self.parser.CurrentLineNumber}: <{tag}>: elements nested more "
                             f"than {MAX_DEPTH} deep")
        self.builder.start(tag, attrs)

    def end(self, tag: str) -> None:
        self.depth -= 1
        self.builder.end(tag)


def _parse_xml(path: Path, data: bytes) -> ET.Element:
    # ElementTree's own parser turns on namespaces, under which OpenSim's "A::B" names are errors.
    parser = expat.ParserCreate()
    builder = _TreeBuilder(path, parser)
    parser.buffer_text = True
    parser.StartElementHandler = builder.start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.builder.data
    try:
        parser.Parse(data, True)
        return builder.builder.close()
    except expat.ExpatError as exc:
        raise InputError(f"{path}, line {exc.lineno}: not well-formed XML ({expat.errors.messages[exc.code]})") from None
    except AssertionError:  # TreeBuilder: no root element
        raise InputError(f"{path}: not well-formed XML (no root element)") from None
    except LookupError as exc:  # the XML declaration names an encoding Python does not know
        raise InputError(f"{path}, line 1: not well-formed XML ({exc})") from None


def _upgraded(path: Path, version: int) -> bytes:
    """The text of OpenSim 3 (or older) model ``path`` as OpenSim 4 writes it after loading it."""
    where = f"{path}: <OpenSimDocument Version={version}>"
    try:
        import opensim
    except ImportError:
        raise InputError(f"{where}: an OpenSim 3 (or older) model; converting it needs the opensim package "
                         "to upgrade it (pip install opensim), or open and save it in OpenSim 4 first") from None
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "upgraded.osim")
        try:
            opensim.Model(str(path)).printToXML(out)
            return Path(out).read_bytes()
        except (RuntimeError, OSError) as exc:
            raise InputError(f"{where}: OpenSim could not load this older model to upgrade it ({exc})") from None


def read_xml(path: str | Path) -> ET.Element:
    """The root element of the XML file ``path``, OpenSim's ``A::B`` element names allowed;
    :class:`InputError` naming the file (and line) for anything that cannot be read or parsed."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except (OSError, ValueError) as exc:  # ValueError: a path with a NUL character
        raise InputError(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    return _parse_xml(path, data)


def read_document(path: str | Path) -> ET.Element:
    """The ``<OpenSimDocument>`` element of ``path`` in OpenSim 4 form (older files upgraded)."""
    path = Path(path)
    root = read_xml(path)
    if root.tag != "OpenSimDocument":
        raise InputError(f"{path}: <{root.tag}>: expected an <OpenSimDocument> root")
    text = root.get("Version")
    try:
        version = int(text)
    except (TypeError, ValueError):
        raise InputError(f"{path}: <OpenSimDocument Version={text!r}>: expected an integer version "
                         "such as 40000") from None
    if version < _OPENSIM_4:
        root = _parse_xml(path, _upgraded(path, version))
    return root


def read_osim(path: str | Path) -> OsimModel:
    """Parse ``path`` (an OpenSim model) into an :class:`OsimModel`."""
    path = Path(path)
    reader = _Reader(path)
    el = read_document(path).find("Model")
    if el is None:
        raise reader.error("<OpenSimDocument>", "expected a <Model>")
    ground = el.find("Ground")
    ground_name = ground.get("name", "ground") if ground is not None else "ground"
    model = OsimModel(
        path=path,
        name=el.get("name") or path.stem,
        ground=ground_name,
        gravity=tuple(reader.floats(el, "gravity", "<Model>", 3, "0 -9.80665 0")),
    )
    model.frames["/ground"] = (None, np.eye(4))
    if ground is not None:
        _read_geometry(reader, model, ground, "/ground")
        _read_frames(reader, model, ground.find("components"), "/ground")
    _read_frames(reader, model, el.find("components"), "")
    for b in _objects(el.find("BodySet")):
        where = reader.describe(b)
        if b.tag != "Body":
            raise reader.error(where, "expected a Body")
        name = reader.name(b, where)
        bpath = f"/bodyset/{name}"
        if name in model.bodies:
            raise reader.error(where, "a second body of that name")
        model.frames[bpath] = (None, np.eye(4))
        mass = reader.floats(b, "mass", where, 1)[0]
        if mass < 0:
            raise reader.error(f"{where} <mass>", f"expected a mass of 0 kg or more, got {mass!r}")
        model.bodies[name] = Body(
            name=name,
            mass=mass,
            mass_center=tuple(reader.floats(b, "mass_center", where, 3, "0 0 0")),
            inertia=tuple(reader.floats(b, "inertia", where, 6, "0 0 0 0 0 0")),
        )
        _read_geometry(reader, model, b, bpath)
        _read_frames(reader, model, b.find("components"), bpath)
    for j in _objects(el.find("JointSet")):
        model.joints.append(_read_joint(reader, model, j))
    for c in _objects(el.find("ConstraintSet")):
        where = reader.describe(c)
        if not reader.flag(c, "isEnforced", where, "true"):
            continue
        if c.tag != "CoordinateCouplerConstraint":
            model.constraints.append(Constraint(reader.name(c, where), c.tag))
            continue
        independent = reader.text(c, "independent_coordinate_names", where).split()
        if len(independent) != 1:
            raise reader.error(where, f"expected one independent coordinate, got {independent}")
        holder = c.find("coupled_coordinates_function")
        if holder is None or len(holder) != 1:
            raise reader.error(where, "expected one function in <coupled_coordinates_function>")
        fn = reader.function(holder[0], where)
        scale = reader.floats(c, "scale_factor", where, 1, "1")[0]
        if scale != 1.0:
            fn = {"type": "multiplier", "scale": scale, "function": fn}
        model.couplers.append(Coupler(reader.name(c, where), reader.text(c, "dependent_coordinate_name", where),
                                      independent[0], fn))
    for m in _objects(el.find("MarkerSet")):
        where = reader.describe(m)
        name = reader.name(m, where)
        mpath = f"/markerset/{name}"
        model.markers.append(Marker(
            name=name,
            frame=_resolve(mpath, reader.text(m, "socket_parent_frame", where)),
            location=tuple(reader.floats(m, "location", where, 3, "0 0 0")),
        ))
    for g in _objects(el.find("ContactGeometrySet")):
        _read_contact_geometry(reader, model, g)
    for child in el:
        if child.tag in _IGNORED_SETS or not child.tag.endswith("Set") or child.tag in (
                "BodySet", "JointSet", "ConstraintSet", "MarkerSet"):
            continue
        if _objects(child):
            raise reader.error(f"<{child.tag}>", "this set changes the model's kinematics and is not supported")
    _check(reader, model)
    return model


def _read_contact_geometry(reader: _Reader, model: OsimModel, g: ET.Element) -> None:
    where = reader.describe(g)
    name = reader.name(g, where)
    params = {"name": name}
    if g.tag in CONTACT_GEOMETRY:
        x = np.eye(4)
        x[:3, :3] = euler_xyz_body_fixed(reader.floats(g, "orientation", where, 3, "0 0 0"))
        x[:3, 3] = reader.floats(g, "location", where, 3, "0 0 0")
        params["transform"] = x
        if g.tag == "ContactSphere":
            params["radius"] = reader.floats(g, "radius", where, 1)[0]
        elif g.tag == "ContactMesh":
            params["file"] = reader.text(g, "filename", where)
    frame = _resolve(f"/contactgeometryset/{name}", reader.text(g, "socket_frame", where, "/ground"))
    model.contact_geometry.append(Geometry(g.tag, frame, params))


def _check(reader: _Reader, model: OsimModel) -> None:
    """Every socket names a known frame, frames do not form cycles, and the joints form a tree
    rooted at ground at most MAX_DEPTH bodies deep."""
    for path, (parent, _) in model.frames.items():
        if parent is not None and parent not in model.frames:
            raise reader.error(f"frame {path!r}", f"socket_parent {parent!r} is not a frame of the model")
    for path in model.frames:
        model.frame_in_base(path)
    for marker in model.markers:
        if marker.frame not in model.frames:
            raise reader.error(f"<Marker name={marker.name!r}>", f"socket_parent_frame {marker.frame!r} is not a frame of the model")
    for g in model.contact_geometry:
        if g.frame not in model.frames:
            raise reader.error(f"<{g.kind} name={g.params['name']!r}>", f"socket_frame {g.frame!r} is not a frame of the model")
    children: set[str] = set()
    for joint in model.joints:
        for label, frame in (("socket_parent_frame", joint.parent_frame), ("socket_child_frame", joint.child_frame)):
            if frame not in model.frames:
                raise reader.error(f"<{joint.type} name={joint.name!r}>", f"{label} {frame!r} is not a frame of the model")
        child = model.frame_in_base(joint.child_frame)[0]
        if child == "/ground" or child in children:
            raise reader.error(f"<{joint.type} name={joint.name!r}>",
                               f"child {child!r} already has a parent joint (closed loops are not supported)")
        children.add(child)
    missing = [name for name in model.bodies if f"/bodyset/{name}" not in children]
    if missing:
        raise reader.error("<BodySet>", f"bodies {missing} are not the child of any joint")
    parent_of = {model.frame_in_base(j.child_frame)[0]: model.frame_in_base(j.parent_frame)[0] for j in model.joints}
    depth = {"/ground": 0}
    for body in parent_of:
        chain, base = [], body
        while base not in depth:
            chain.append(base)
            if len(chain) > len(parent_of):
                raise reader.error("<JointSet>", f"the joints above body {model.body_name(body)!r} form a loop "
                                   "that never reaches ground")
            base = parent_of[base]
        for link in reversed(chain):
            depth[link] = depth[base] + 1
            base = link
        if depth[body] > MAX_DEPTH:
            raise reader.error(f"body {model.body_name(body)!r}", f"{depth[body]} joints from ground; at most "
                               f"{MAX_DEPTH} are supported")
    coordinates = {c.name for j in model.joints for c in j.coordinates}
    for coupler in model.couplers:
        for name in (coupler.dependent, coupler.independent):
            if name not in coordinates:
                raise reader.error(f"<CoordinateCouplerConstraint name={coupler.name!r}>", f"unknown coordinate {name!r}")
