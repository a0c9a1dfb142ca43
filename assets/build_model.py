"""Build the bundled full-body model ``mjx_biomech/data/fullbody.xml`` from the readable tables beside this file.

``python -m assets.build_model`` rewrites the MJCF; ``tests/test_assets.py`` fails when the committed
file differs from what the tables give. Tables (CSV, ``#`` lines are comments):

- ``tables/deleva1996_male.csv``: de Leva (1996) segment parameters (mass, centre of mass, radii of gyration).
- ``tables/bodies.csv``: the kinematic tree, each body's origin in its parent's frame.
- ``tables/joints.csv``: one hinge or slide joint per OpenSim coordinate, with range, neutral value and motor gear.
- ``tables/segments.csv``: which share of which de Leva segment each body carries, and where its landmarks are.
- ``tables/geometry.csv``: capsules, boxes and spheres; only ``contact=floor`` geoms touch the floor.
- ``markersets/<set>.csv``: keypoints (``keypoint,body,x,y,z``) in the set's canonical order.

Every position and axis is written in OpenSim's frame convention (X forward, Y up, Z right): the whole
tree hangs under a frame turned +90 degrees about X, so OpenSim coordinates keep their values and signs.
"""

from __future__ import annotations

import csv
import json
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mjx_biomech.body.metadata import METADATA_NAME
from mjx_biomech.errors import InputError
from mjx_biomech.io import write_text_atomic

ASSETS_DIR = Path(__file__).resolve().parent
TABLES_DIR = ASSETS_DIR / "tables"
MARKERSETS_DIR = ASSETS_DIR / "markersets"
MODEL_PATH = ASSETS_DIR.parent / "mjx_biomech" / "data" / "fullbody.xml"

BODY_MASS_KG = 75.0
# OpenSim's Y-up ground turned +90 deg about X: OpenSim Y -> MuJoCo Z, OpenSim Z -> MuJoCo -Y.
OPENSIM_GROUND_QUAT = (math.sqrt(0.5), math.sqrt(0.5), 0.0, 0.0)
MARKER_SITE_GROUP = 3
MARKER_SITE_RADIUS = 0.008
JOINT_DAMPING = 0.5
JOINT_ARMATURE = 0.01
FLOOR_FRICTION = (1.0, 0.005, 0.0001)
# Scale groups of the markerless-capture paper (overall, pelvis, each thigh, each leg+foot, each arm), plus torso and head.
SCALE_GROUPS = (
    ("pelvis", ("pelvis",)),
    ("thigh_r", ("femur_r",)),
    ("thigh_l", ("femur_l",)),
    ("leg_r", ("tibia_r", "talus_r", "calcn_r", "toes_r")),
    ("leg_l", ("tibia_l", "talus_l", "calcn_l", "toes_l")),
    ("arm_r", ("humerus_r", "ulna_r", "radius_r", "hand_r")),
    ("arm_l", ("humerus_l", "ulna_l", "radius_l", "hand_l")),
    ("torso", ("torso",)),
    ("head", ("head",)),
)


@dataclass(frozen=True)
class Body:
    name: str
    parent: str
    pos: tuple[float, float, float]


@dataclass(frozen=True)
class Joint:
    name: str
    body: str
    type: str
    axis: tuple[float, float, float]
    range: tuple[float, float]
    default: float
    gear: float


@dataclass(frozen=True)
class Segment:
    name: str
    mass_pct: float
    com_pct: float
    r_sag_pct: float
    r_trans_pct: float
    r_long_pct: float


@dataclass(frozen=True)
class SegmentShare:
    body: str
    segment: str
    mass_share: float
    long_axis: int
    origin: tuple[float, float, float]
    end: tuple[float, float, float]


@dataclass(frozen=True)
class Geom:
    body: str
    name: str
    type: str
    size: tuple[float, ...]
    pos1: tuple[float, float, float]
    pos2: tuple[float, float, float] | None
    floor_contact: bool


@dataclass(frozen=True)
class Marker:
    keypoint: str
    body: str
    pos: tuple[float, float, float]


@dataclass(frozen=True)
class Inertial:
    mass: float
    com: tuple[float, float, float]
    diag: tuple[float, float, float]


def read_table(path: Path, columns: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """Rows of a CSV table as ``(line number, {column: text})``; ``#`` lines and blank lines are skipped."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InputError(f"{path}: cannot read table ({exc.strerror})") from exc
    numbered = [(n, line) for n, line in enumerate(lines, 1) if line.strip() and not line.lstrip().startswith("#")]
    if not numbered:
        raise InputError(f"{path}: empty table, expected a header row {','.join(columns)}")
    header_line, header = numbered[0]
    found = tuple(next(csv.reader([header])))
    if found != columns:
        raise InputError(f"{path}: line {header_line}: expected columns {','.join(columns)}, found {','.join(found)}")
    rows = []
    for n, line in numbered[1:]:
        cells = next(csv.reader([line]))
        if len(cells) != len(columns):
            raise InputError(f"{path}: line {n}: expected {len(columns)} fields ({','.join(columns)}), found {len(cells)}")
        rows.append((n, dict(zip(columns, (c.strip() for c in cells)))))
    return rows


def _number(path: Path, line: int, row: dict[str, str], column: str) -> float:
    try:
        value = float(row[column])
    except ValueError:
        raise InputError(f"{path}: line {line}: column {column!r} must be a number, found {row[column]!r}") from None
    if not math.isfinite(value):
        raise InputError(f"{path}: line {line}: column {column!r} must be finite, found {row[column]!r}")
    return value


def _vector(path: Path, line: int, row: dict[str, str], columns: tuple[str, ...]) -> tuple[float, ...]:
    return tuple(_number(path, line, row, c) for c in columns)


def _known_body(path: Path, line: int, body: str, bodies: set[str] | dict) -> str:
    if body not in bodies:
        raise InputError(f"{path}: line {line}: unknown body {body!r}, expected one of {', '.join(sorted(bodies))}")
    return body


def read_bodies(path: Path) -> list[Body]:
    """The kinematic tree in order: every parent is listed before its children; the root has no parent."""
    bodies: list[Body] = []
    names: set[str] = set()
    for line, row in read_table(path, ("body", "parent", "x", "y", "z")):
        name, parent = row["body"], row["parent"]
        if name in names:
            raise InputError(f"{path}: line {line}: body {name!r} listed twice")
        if parent == "" and bodies:
            raise InputError(f"{path}: line {line}: body {name!r} has no parent; only the first row is the root")
        if parent != "" and parent not in names:
            raise InputError(f"{path}: line {line}: parent {parent!r} of body {name!r} must be listed on an earlier row")
        bodies.append(Body(name, parent, _vector(path, line, row, ("x", "y", "z"))))
        names.add(name)
    if not bodies:
        raise InputError(f"{path}: no bodies")
    return bodies


def read_joints(path: Path, bodies: set[str]) -> list[Joint]:
    columns = ("joint", "body", "type", "axis_x", "axis_y", "axis_z", "range_lo", "range_hi", "default", "gear")
    joints: list[Joint] = []
    for line, row in read_table(path, columns):
        if row["type"] not in ("hinge", "slide"):
            raise InputError(f"{path}: line {line}: joint {row['joint']!r} type must be hinge or slide, found {row['type']!r}")
        axis = _vector(path, line, row, ("axis_x", "axis_y", "axis_z"))
        lo, hi = _vector(path, line, row, ("range_lo", "range_hi"))
        default = _number(path, line, row, "default")
        if not np.any(axis):
            raise InputError(f"{path}: line {line}: joint {row['joint']!r} has a zero axis")
        if not lo < hi or not lo <= default <= hi:
            raise InputError(f"{path}: line {line}: joint {row['joint']!r} needs range_lo < range_hi and the default inside")
        joints.append(Joint(row["joint"], _known_body(path, line, row["body"], bodies), row["type"], axis, (lo, hi),
                            default, _number(path, line, row, "gear")))
    return joints


def read_deleva(path: Path) -> dict[str, Segment]:
    columns = ("segment", "origin", "end", "length_mm", "mass_pct", "com_pct", "r_sag_pct", "r_trans_pct", "r_long_pct")
    return {
        row["segment"]: Segment(row["segment"], *_vector(path, line, row, columns[4:]))
        for line, row in read_table(path, columns)
    }


def read_segments(path: Path, bodies: set[str], segments: dict[str, Segment]) -> list[SegmentShare]:
    columns = ("body", "segment", "mass_share", "long_axis", "origin_x", "origin_y", "origin_z", "end_x", "end_y", "end_z")
    shares = []
    for line, row in read_table(path, columns):
        if row["segment"] not in segments:
            raise InputError(f"{path}: line {line}: unknown segment {row['segment']!r}, expected one of {', '.join(segments)}")
        if row["long_axis"] not in ("x", "y"):
            raise InputError(f"{path}: line {line}: long_axis must be x or y (z is the medio-lateral axis), found {row['long_axis']!r}")
        shares.append(SegmentShare(
            _known_body(path, line, row["body"], bodies), row["segment"], _number(path, line, row, "mass_share"),
            "xy".index(row["long_axis"]), _vector(path, line, row, columns[4:7]), _vector(path, line, row, columns[7:10])))
    return shares


def read_geometry(path: Path, bodies: set[str]) -> list[Geom]:
    columns = ("body", "name", "type", "size_a", "size_b", "size_c", "x1", "y1", "z1", "x2", "y2", "z2", "contact")
    size_count = {"sphere": 1, "capsule": 1, "box": 3}
    geoms = []
    for line, row in read_table(path, columns):
        kind = row["type"]
        if kind not in size_count:
            raise InputError(f"{path}: line {line}: geom type must be one of {', '.join(size_count)}, found {kind!r}")
        if row["contact"] not in ("floor", "none"):
            raise InputError(f"{path}: line {line}: contact must be floor or none, found {row['contact']!r}")
        size = _vector(path, line, row, ("size_a", "size_b", "size_c")[: size_count[kind]])
        pos2 = _vector(path, line, row, ("x2", "y2", "z2")) if kind == "capsule" else None
        geoms.append(Geom(_known_body(path, line, row["body"], bodies), row["name"], kind, size,
                          _vector(path, line, row, ("x1", "y1", "z1")), pos2, row["contact"] == "floor"))
    return geoms


def read_marker_table(path: Path, bodies: set[str]) -> list[Marker]:
    """Keypoints of one marker set, in the table's (canonical) order; positions in metres in the body frame."""
    markers = []
    seen: set[str] = set()
    for line, row in read_table(path, ("keypoint", "body", "x", "y", "z")):
        if row["keypoint"] in seen:
            raise InputError(f"{path}: line {line}: keypoint {row['keypoint']!r} listed twice")
        seen.add(row["keypoint"])
        markers.append(Marker(row["keypoint"], _known_body(path, line, row["body"], bodies),
                              _vector(path, line, row, ("x", "y", "z"))))
    return markers


def body_inertials(shares: list[SegmentShare], segments: dict[str, Segment], body_mass: float,
                   source: Path = TABLES_DIR / "segments.csv") -> dict[str, Inertial]:
    """Mass, centre of mass and principal moments per body from its de Leva segment shares (``source`` names them in errors)."""
    parts: dict[str, list[tuple[float, np.ndarray, np.ndarray]]] = {}
    for share in shares:
        seg = segments[share.segment]
        origin, end = np.asarray(share.origin), np.asarray(share.end)
        length = float(np.linalg.norm(end - origin))
        mass = body_mass * seg.mass_pct / 100.0 * share.mass_share
        radii = np.empty(3)
        radii[share.long_axis] = seg.r_long_pct
        radii[1 - share.long_axis] = seg.r_sag_pct
        radii[2] = seg.r_trans_pct
        inertia = np.diag(mass * (radii / 100.0 * length) ** 2)
        parts.setdefault(share.body, []).append((mass, origin + seg.com_pct / 100.0 * (end - origin), inertia))
    inertials = {}
    for body, pieces in parts.items():
        mass = sum(m for m, _, _ in pieces)
        com = sum(m * c for m, c, _ in pieces) / mass
        inertia = sum(i + m * (np.dot(c - com, c - com) * np.eye(3) - np.outer(c - com, c - com)) for m, c, i in pieces)
        off_diagonal = inertia - np.diag(np.diag(inertia))
        # The MJCF states principal moments in the body axes, so combined pieces must keep those axes principal.
        if np.abs(off_diagonal).max() > 1e-12 * np.abs(inertia).max():
            raise InputError(f"{source}: body {body!r}: its segment centres of mass must differ along one body axis only")
        inertials[body] = Inertial(mass, tuple(com), tuple(np.diag(inertia)))
    return inertials


def _fmt(values) -> str:
    # 10 significant digits keep the tables' precision; +0.0 turns -0 into 0 so output is stable.
    return " ".join(f"{float(v) + 0.0:.10g}" for v in np.atleast_1d(values))


def _depth_first(bodies: list[Body]) -> list[Body]:
    """Bodies in MuJoCo's numbering (depth-first through the nested MJCF), children in table order."""
    children: dict[str, list[Body]] = {}
    for body in bodies:
        children.setdefault(body.parent, []).append(body)
    ordered: list[Body] = []
    stack = list(reversed(children[""]))
    while stack:
        body = stack.pop()
        ordered.append(body)
        stack += reversed(children.get(body.name, []))
    return ordered


def _coordinate_order(joints: list[Joint]) -> list[Joint]:
    """Joints in OpenSim's coordinate order: per body, rotations before translations, as a CustomJoint lists them."""
    ordered: list[Joint] = []
    for joint in joints:
        if joint in ordered:
            continue
        same_body = [j for j in joints if j.body == joint.body]
        ordered += [j for j in same_body if j.type == "hinge"] + [j for j in same_body if j.type == "slide"]
    return ordered


def _metadata(joints: list[Joint], bodies: list[Body], marker_sets: dict[str, list[Marker]]) -> str:
    coordinates = [
        {"name": j.name, "joint": j.name, "motion": "rotational" if j.type == "hinge" else "translational",
         "range": list(j.range), "default": j.default, "locked": False}
        for j in _coordinate_order(joints)
    ]
    groups = [{"name": "overall", "bodies": [b.name for b in bodies], "per_axis": False}]
    groups += [{"name": name, "bodies": list(members), "per_axis": False} for name, members in SCALE_GROUPS]
    sets = {name: {m.keypoint: f"{name}/{m.keypoint}" for m in markers} for name, markers in marker_sets.items()}
    meta = {"format": "mjx_biomech/1", "coordinates": coordinates, "dependent_joints": [], "scale_groups": groups,
            "marker_sets": sets, "opensim": {}}
    return json.dumps(meta, separators=(",", ":"))


def _defaults(mujoco: ET.Element) -> None:
    default = ET.SubElement(mujoco, "default")
    ET.SubElement(default, "joint", damping=_fmt(JOINT_DAMPING), armature=_fmt(JOINT_ARMATURE), limited="true")
    ET.SubElement(default, "geom", contype="0", conaffinity="0", rgba="0.8 0.7 0.6 1")
    ET.SubElement(default, "motor", ctrlrange="-1 1", ctrllimited="true")
    # The pelvis floats: its ranges only bound fitting, so they are stored but never enforced, and nothing damps it.
    floating = ET.SubElement(default, "default", {"class": "floating_base"})
    ET.SubElement(floating, "joint", damping="0", armature="0", limited="false")
    # Floor contact is one-way (foot conaffinity x floor contype) so the feet never collide with each other.
    foot = ET.SubElement(default, "default", {"class": "foot_contact"})
    ET.SubElement(foot, "geom", contype="0", conaffinity="1", condim="3", friction=_fmt(FLOOR_FRICTION), rgba="0.3 0.3 0.8 1")
    marker = ET.SubElement(default, "default", {"class": "marker"})
    ET.SubElement(marker, "site", type="sphere", size=_fmt(MARKER_SITE_RADIUS), group=str(MARKER_SITE_GROUP), rgba="0.9 0.2 0.2 1")


def _body_element(parent_el: ET.Element, body: Body, root: bool, inertial: Inertial, joints: list[Joint],
                  geoms: list[Geom], sites: list[tuple[str, Marker]]) -> ET.Element:
    el = ET.SubElement(parent_el, "body", name=body.name, pos=_fmt(body.pos))
    ET.SubElement(el, "inertial", pos=_fmt(inertial.com), mass=_fmt(inertial.mass), diaginertia=_fmt(inertial.diag))
    for j in joints:
        attrs = {"name": j.name, "type": j.type, "axis": _fmt(j.axis), "range": _fmt(j.range)}
        if root:
            attrs["class"] = "floating_base"
        ET.SubElement(el, "joint", attrs)
    for g in geoms:
        attrs = {"name": g.name, "type": g.type, "size": _fmt(g.size)}
        if g.pos2 is None:
            attrs["pos"] = _fmt(g.pos1)
        else:
            attrs["fromto"] = _fmt(g.pos1 + g.pos2)
        if g.floor_contact:
            attrs["class"] = "foot_contact"
        ET.SubElement(el, "geom", attrs)
    for site_name, m in sites:
        ET.SubElement(el, "site", {"name": site_name, "class": "marker", "pos": _fmt(m.pos)})
    return el


def build_mjcf(tables_dir: Path = TABLES_DIR, markersets_dir: Path = MARKERSETS_DIR) -> str:
    """The MJCF text of the bundled model, as ``python -m assets.build_model`` writes it."""
    tables_dir, markersets_dir = Path(tables_dir), Path(markersets_dir)
    bodies = read_bodies(tables_dir / "bodies.csv")
    names = {b.name for b in bodies}
    joints = read_joints(tables_dir / "joints.csv", names)
    segments = read_deleva(tables_dir / "deleva1996_male.csv")
    shares = read_segments(tables_dir / "segments.csv", names, segments)
    inertials = body_inertials(shares, segments, BODY_MASS_KG, tables_dir / "segments.csv")
    missing = [b.name for b in bodies if b.name not in inertials]
    if missing:
        raise InputError(f"{tables_dir / 'segments.csv'}: no mass for bodies {', '.join(missing)}")
    geoms = read_geometry(tables_dir / "geometry.csv", names)
    marker_paths = sorted(markersets_dir.glob("*.csv"))
    if not marker_paths:
        raise InputError(f"{markersets_dir}: no marker-set tables (*.csv)")
    marker_sets = {p.stem: read_marker_table(p, names) for p in marker_paths}

    mujoco = ET.Element("mujoco", model="mjx_biomech_fullbody")
    mujoco.append(ET.Comment(" Generated by assets/build_model.py from assets/tables and assets/markersets: edit those, then run"
                             " python -m assets.build_model. "))
    ET.SubElement(mujoco, "compiler", angle="radian", inertiafromgeom="false", autolimits="true")
    ET.SubElement(mujoco, "option", timestep="0.002", integrator="implicitfast")
    _defaults(mujoco)
    world = ET.SubElement(mujoco, "worldbody")
    ET.SubElement(world, "light", name="sun", directional="true", pos="0 0 4", dir="0 0 -1")
    ET.SubElement(world, "geom", name="floor", type="plane", size="0 0 0.05", contype="1", conaffinity="0", condim="3",
                  friction=_fmt(FLOOR_FRICTION), rgba="0.85 0.85 0.85 1")
    ground = ET.SubElement(world, "frame", name="opensim_ground", quat=_fmt(OPENSIM_GROUND_QUAT))

    elements = {"": ground}
    qpos_order: list[Joint] = []
    for body in _depth_first(bodies):
        body_joints = [j for j in joints if j.body == body.name]
        qpos_order += body_joints
        sites = [(f"{set_name}/{m.keypoint}", m) for set_name, markers in marker_sets.items() for m in markers
                 if m.body == body.name]
        elements[body.name] = _body_element(elements[body.parent], body, body.parent == "", inertials[body.name],
                                             body_joints, [g for g in geoms if g.body == body.name], sites)

    actuator = ET.SubElement(mujoco, "actuator")
    for j in joints:
        if j.gear > 0:
            ET.SubElement(actuator, "motor", name=j.name, joint=j.name, gear=_fmt(j.gear))
    keyframe = ET.SubElement(mujoco, "keyframe")
    ET.SubElement(keyframe, "key", name="neutral", qpos=_fmt([j.default for j in qpos_order]))
    custom = ET.SubElement(mujoco, "custom")
    ET.SubElement(custom, "text", name=METADATA_NAME, data=_metadata(joints, bodies, marker_sets))
    ET.indent(mujoco, space="  ")
    return ET.tostring(mujoco, encoding="unicode") + "\n"


def main() -> None:
    write_text_atomic(MODEL_PATH, build_mjcf())
    print(f"wrote {MODEL_PATH}")


if __name__ == "__main__":
    main()
