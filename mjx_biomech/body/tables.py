"""The tables a :class:`~mjx_biomech.body.model.BiomechModel` is built from: coordinates and the
joints they drive, scale groups and marker sets, read from the ``mjx_biomech`` metadata
(docs/model_format.md) or, for plain MJCF, derived from MuJoCo's joints and equalities. Bad
metadata raises :class:`InputError` naming the model and the entry."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping, Sequence

import mujoco
import numpy as np

from mjx_biomech.body import functions
from mjx_biomech.errors import InputError

_FREE_SUFFIXES = ("_tx", "_ty", "_tz", "_rx", "_ry", "_rz")
_BALL_SUFFIXES = ("_rx", "_ry", "_rz")
_MOTIONS = ("rotational", "translational")


@dataclass(frozen=True)
class Coordinate:
    """One independent coordinate.

    ``kind`` is ``"joint"`` (qpos of ``qposadr`` equals the value), ``"free"`` / ``"ball"``
    (component ``component`` of a free or ball joint: translation, then rotation vector) or
    ``"none"`` (drives only dependent joints).
    """

    name: str
    motion: str
    range: tuple[float, float]
    default: float
    locked: bool
    kind: str
    qposadr: int
    component: int = 0


@dataclass(frozen=True)
class DependentJoint:
    """qpos[qposadr] = output_offset + factor * function(coordinate - input_offset)."""

    joint: str
    joint_id: int
    qposadr: int
    input: int | None
    motion: str
    function: dict
    input_offset: float = 0.0
    output_offset: float = 0.0


@dataclass(frozen=True)
class ScaleGroup:
    """Bodies scaled together: one parameter ``name``, or three ``name.x/.y/.z`` when ``per_axis``."""

    name: str
    bodies: tuple[str, ...]
    per_axis: bool


# --------------------------------------------------------------------- tables
# Read once from the MjModel and the metadata by BiomechModel.from_mujoco; every error names
# the model's source and the metadata element.


def _object(entry: Any, keys: Sequence[str], where: str) -> None:
    """Raise unless ``entry`` is a JSON object with every one of ``keys``."""
    if not isinstance(entry, Mapping):
        raise InputError(f"{where}: expected a JSON object, got {entry!r}")
    for key in keys:
        if key not in entry:
            raise InputError(f"{where} lacks {key!r}")


def _list(meta: Mapping, key: str, source: str) -> list:
    value = meta.get(key, [])
    if not isinstance(value, (list, tuple)):
        raise InputError(f"{source}: metadata {key}: expected a JSON list, got {type(value).__name__}")
    return list(value)


def _joint_id(m: mujoco.MjModel, name: str, where: str) -> int:
    jid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, name)
    if jid < 0:
        raise InputError(f"{where} names joint {name!r}, which the MJCF does not define")
    return jid


def _float(entry: Mapping, key: str, where: str) -> float:
    """``entry[key]`` (default 0) as a finite number."""
    try:
        value = float(entry.get(key, 0.0))
    except (TypeError, ValueError) as e:
        raise InputError(f"{where}: {key!r} must be a number, got {entry[key]!r}") from e
    if not np.isfinite(value):
        raise InputError(f"{where}: {key!r} must be finite, got {value}")
    return value


def _motion(entry: Mapping, where: str) -> str:
    motion = entry.get("motion", "rotational")
    if motion not in _MOTIONS:
        raise InputError(f"{where}: 'motion' must be one of {_MOTIONS}, got {motion!r}")
    return motion


def _range(value: Any, where: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError) as e:
        raise InputError(f"{where}: 'range' must be two numbers [lower, upper], got {value!r}") from e
    if not lo <= hi:
        raise InputError(f"{where}: 'range' must be [lower, upper] with lower <= upper, got {value!r}")
    return lo, hi


def coordinates_from_metadata(
    m: mujoco.MjModel, meta: Mapping, source: str
) -> tuple[tuple[Coordinate, ...], tuple[DependentJoint, ...]]:
    hinge_or_slide = (int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE))
    coords: list[Coordinate] = []
    for i, c in enumerate(_list(meta, "coordinates", source)):
        name = c.get("name") if isinstance(c, Mapping) else None
        where = f"{source}: metadata coordinates[{i}] ({name!r})"
        _object(c, ("name", "motion", "range"), where)
        joint = c.get("joint")
        if joint is None:
            kind, adr = "none", -1
        else:
            jid = _joint_id(m, joint, where)
            if int(m.jnt_type[jid]) not in hinge_or_slide:
                raise InputError(f"{where}: joint {joint!r} must be a hinge or slide")
            kind, adr = "joint", int(m.jnt_qposadr[jid])
        coords.append(
            Coordinate(
                name=c["name"],
                motion=_motion(c, where),
                range=_range(c["range"], where),
                default=_float(c, "default", where),
                locked=bool(c.get("locked", False)),
                kind=kind,
                qposadr=adr,
            )
        )
    index = {c.name: i for i, c in enumerate(coords)}
    deps: list[DependentJoint] = []
    for i, d in enumerate(_list(meta, "dependent_joints", source)):
        joint = d.get("joint") if isinstance(d, Mapping) else None
        where = f"{source}: metadata dependent_joints[{i}] ({joint!r})"
        _object(d, ("joint", "function"), where)
        jid = _joint_id(m, joint, where)
        inp = d.get("input")
        if inp is not None and inp not in index:
            raise InputError(f"{where}: input coordinate {inp!r} is not a coordinate")
        try:
            functions.build(d["function"])
        except InputError as e:
            raise InputError(f"{where}: bad function: {e}") from e
        deps.append(
            DependentJoint(
                joint=joint,
                joint_id=jid,
                qposadr=int(m.jnt_qposadr[jid]),
                input=None if inp is None else index[inp],
                motion=_motion(d, where),
                function=d["function"],
                input_offset=_float(d, "input_offset", where),
                output_offset=_float(d, "output_offset", where),
            )
        )
    return tuple(coords), tuple(deps)


def coordinates_from_mujoco(
    m: mujoco.MjModel, source: str
) -> tuple[tuple[Coordinate, ...], tuple[DependentJoint, ...]]:
    """Plain MJCF: joints driven by joint equalities become polynomial dependents."""
    driven: dict[int, tuple[int, np.ndarray]] = {}
    for e in range(m.neq):
        if m.eq_type[e] == mujoco.mjtEq.mjEQ_JOINT and m.eq_active0[e]:
            driven[int(m.eq_obj1id[e])] = (int(m.eq_obj2id[e]), np.array(m.eq_data[e, :5]))
    coords: list[Coordinate] = []
    coord_of_joint: dict[int, int] = {}
    for j in range(m.njnt):
        if j in driven:
            continue
        name = m.joint(j).name or f"joint{j}"
        adr = int(m.jnt_qposadr[j])
        jt = m.jnt_type[j]
        if jt == mujoco.mjtJoint.mjJNT_FREE:
            for k, suffix in enumerate(_FREE_SUFFIXES):
                rng = (-np.pi, np.pi) if k >= 3 else (-2.0, 2.0)
                default = float(m.qpos0[adr + k]) if k < 3 else 0.0
                motion = "rotational" if k >= 3 else "translational"
                coords.append(Coordinate(name + suffix, motion, rng, default, False, "free", adr, k))
            continue
        if jt == mujoco.mjtJoint.mjJNT_BALL:
            for k, suffix in enumerate(_BALL_SUFFIXES):
                coords.append(Coordinate(name + suffix, "rotational", (-np.pi, np.pi), 0.0, False, "ball", adr, k))
            continue
        rotational = jt == mujoco.mjtJoint.mjJNT_HINGE
        if m.jnt_limited[j]:
            rng = (float(m.jnt_range[j, 0]), float(m.jnt_range[j, 1]))
        else:
            rng = (-np.pi, np.pi) if rotational else (-1.0, 1.0)
        coord_of_joint[j] = len(coords)
        coords.append(
            Coordinate(
                name, "rotational" if rotational else "translational", rng, float(m.qpos0[adr]), False, "joint", adr
            )
        )
    deps: list[DependentJoint] = []
    for j, (j2, poly) in driven.items():
        adr = int(m.jnt_qposadr[j])
        motion = "rotational" if m.jnt_type[j] == mujoco.mjtJoint.mjJNT_HINGE else "translational"
        if j2 < 0:
            fn = {"type": "constant", "value": float(poly[0])}
            inp, in_off = None, 0.0
        else:
            if j2 not in coord_of_joint:
                raise InputError(
                    f"{source}: joint equality drives {m.joint(j).name!r} from {m.joint(j2).name!r}, itself driven"
                )
            fn = {"type": "polynomial", "coefficients": [float(c) for c in poly[::-1]]}
            inp, in_off = coord_of_joint[j2], float(m.qpos0[m.jnt_qposadr[j2]])
        deps.append(DependentJoint(m.joint(j).name, j, adr, inp, motion, fn, in_off, float(m.qpos0[adr])))
    return tuple(coords), tuple(deps)


def read_scale_groups(groups: Sequence[Mapping] | None, body_names: tuple[str, ...], where: str) -> tuple[ScaleGroup, ...]:
    """The groups ``{"name", "bodies", "per_axis"}``, checked against the bodies; ``overall``
    (every body but the world) is added when missing. ``where`` names the groups' origin."""
    movable = tuple(body_names[1:])
    if groups is None:
        # Plain MJCF: one group per body, so any segment can be scaled by name.
        groups = [{"name": "overall", "bodies": list(movable), "per_axis": False}] + [
            {"name": b, "bodies": [b], "per_axis": False} for b in movable if b
        ]
    if not isinstance(groups, (list, tuple)):
        raise InputError(f"{where}: expected a list of groups, got {type(groups).__name__}")
    out = []
    names = set()
    for i, g in enumerate(groups):
        _object(g, ("name", "bodies"), f"{where}[{i}]")
        if g["name"] in names:
            raise InputError(f"{where}[{i}]: duplicate group name {g['name']!r}")
        names.add(g["name"])
        for b in g["bodies"]:
            if b not in body_names:
                raise InputError(f"{where}[{i}] ({g['name']!r}) names body {b!r}, which the MJCF lacks")
        out.append(ScaleGroup(g["name"], tuple(g["bodies"]), bool(g.get("per_axis", False))))
    if "overall" not in names:
        out.insert(0, ScaleGroup("overall", movable, False))
    return tuple(out)


def scale_tables(groups: tuple[ScaleGroup, ...], body_names: tuple[str, ...]) -> tuple[tuple[str, ...], np.ndarray]:
    """The scale parameter names (P,) and the (B, 3, P) bool table of which parameter scales
    which body along which of its axes."""
    nb = len(body_names)
    names: list[str] = []
    members: list[np.ndarray] = []
    for g in groups:
        ids = [body_names.index(b) for b in g.bodies]
        axes = ("x", "y", "z") if g.per_axis else (None,)
        for k, ax in enumerate(axes):
            mask = np.zeros((nb, 3), bool)
            if ax is None:
                mask[ids, :] = True
            else:
                mask[ids, k] = True
            members.append(mask)
            names.append(g.name if ax is None else f"{g.name}.{ax}")
    table = np.stack(members, axis=-1) if members else np.zeros((nb, 3, 0), bool)
    return tuple(names), read_only(table)


def read_marker_sets(sets: Any, site_names: tuple[str, ...], source: str) -> Mapping[str, Mapping[str, str]]:
    where = f"{source}: metadata marker_sets"
    if not isinstance(sets, Mapping):
        raise InputError(f"{where}: expected a JSON object of sets, got {type(sets).__name__}")
    sites = set(site_names)
    out = {}
    for set_name, table in sets.items():
        if not isinstance(table, Mapping):
            raise InputError(f"{where}: set {set_name!r}: expected a JSON object keypoint -> site, got {table!r}")
        for kp, site in table.items():
            if site not in sites:
                raise InputError(f"{source}: marker set {set_name!r}: keypoint {kp!r} names site {site!r}, which the MJCF lacks")
        out[set_name] = MappingProxyType(dict(table))
    return MappingProxyType(out)


def dependent_parents(m: mujoco.MjModel, deps: tuple[DependentJoint, ...]) -> tuple[tuple[int, np.ndarray], ...]:
    """Per dependent joint: its body's parent and the joint axis in the parent's frame, which
    scale a translational dependent's value with the parent body."""
    out = []
    for d in deps:
        body = int(m.jnt_bodyid[d.joint_id])
        rot = np.zeros(9)
        mujoco.mju_quat2Mat(rot, m.body_quat[body])
        out.append((int(m.body_parentid[body]), read_only(rot.reshape(3, 3) @ m.jnt_axis[d.joint_id])))
    return tuple(out)


def read_only(a: np.ndarray) -> np.ndarray:
    a = np.array(a)
    a.setflags(write=False)
    return a
