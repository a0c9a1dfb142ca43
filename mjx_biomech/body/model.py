"""``BiomechModel``: a MuJoCo model with coordinates, scale groups and marker sets.

The model holds the MuJoCo ``MjSpec`` it was compiled from (so a statically scaled twin can be
compiled), the compiled ``MjModel``, and the tables read from the ``mjx_biomech`` metadata
(docs/model_format.md). Everything computed from coordinates and :class:`BodyParams` is a
pure JAX function.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from jax import Array

from mjx_biomech.body import functions
from mjx_biomech.body.kinematics import Kinematics, KinematicTree
from mjx_biomech.body.params import BodyParams
from mjx_biomech.body.rotations import rotvec_to_quat
from mjx_biomech.errors import InputError

_FREE_SUFFIXES = ("_tx", "_ty", "_tz", "_rx", "_ry", "_rz")
_BALL_SUFFIXES = ("_rx", "_ry", "_rz")


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
    name: str
    bodies: tuple[str, ...]
    per_axis: bool





class BiomechModel:
    """A scalable, differentiable body model (see docs/model_format.md).

    Build one with :func:`load_model`. Instances are immutable; all methods that take
    coordinates or :class:`BodyParams` are pure JAX functions (jit/vmap/grad).
    """

    def __init__(self, spec: mujoco.MjSpec | None, mj_model: mujoco.MjModel, source: str, metadata: dict | None):
        self.spec = spec
        self.mj_model = mj_model
        self.source = source
        self.metadata = metadata or {}
        m = mj_model
        self.body_names = tuple(m.body(i).name for i in range(m.nbody))
        self.site_names = tuple(m.site(i).name for i in range(m.nsite))
        self.joint_names = tuple(m.joint(i).name for i in range(m.njnt))
        self._tree = KinematicTree(m)
        self._qpos0 = np.array(m.qpos0, dtype=float)
        if metadata and "coordinates" in metadata:
            self.coordinates, self.dependents = self._coordinates_from_metadata(metadata)
        else:
            self.coordinates, self.dependents = self._coordinates_from_mujoco()
        self.scale_groups = self._scale_groups(self.metadata.get("scale_groups"))
        self.marker_sets = self._marker_sets(self.metadata.get("marker_sets", {}))
        self._build_tables()

    # ----------------------------------------------------------------- tables
    def _err(self, what: str) -> InputError:
        return InputError(f"{self.source}: {what}")

    def _joint_id(self, name: str, where: str) -> int:
        jid = mujoco.mj_name2id(self.mj_model, mujoco.mjtObj.mjOBJ_JOINT, name)
        if jid < 0:
            raise self._err(f"{where} names joint {name!r}, which the MJCF does not define")
        return jid

    def _coordinates_from_metadata(self, meta: dict):
        m = self.mj_model
        coords: list[Coordinate] = []
        for i, c in enumerate(meta["coordinates"]):
            where = f"metadata coordinates[{i}] ({c.get('name')!r})"
            for key in ("name", "motion", "range"):
                if key not in c:
                    raise self._err(f"{where} lacks {key!r}")
            joint = c.get("joint")
            if joint is None:
                kind, adr = "none", -1
            else:
                jid = self._joint_id(joint, where)
                if int(m.jnt_type[jid]) not in (int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE)):
                    raise self._err(f"{where}: joint {joint!r} must be a hinge or slide")
                kind, adr = "joint", int(m.jnt_qposadr[jid])
            coords.append(
                Coordinate(
                    name=c["name"],
                    motion=c["motion"],
                    range=(float(c["range"][0]), float(c["range"][1])),
                    default=float(c.get("default", 0.0)),
                    locked=bool(c.get("locked", False)),
                    kind=kind,
                    qposadr=adr,
                )
            )
        index = {c.name: i for i, c in enumerate(coords)}
        deps: list[DependentJoint] = []
        for i, d in enumerate(meta.get("dependent_joints", [])):
            where = f"metadata dependent_joints[{i}] ({d.get('joint')!r})"
            jid = self._joint_id(d["joint"], where)
            inp = d.get("input")
            if inp is not None and inp not in index:
                raise self._err(f"{where}: input coordinate {inp!r} is not a coordinate")
            try:
                functions.build(d["function"])
            except (ValueError, KeyError, TypeError) as e:
                raise self._err(f"{where}: bad function: {e}") from e
            deps.append(
                DependentJoint(
                    joint=d["joint"],
                    joint_id=jid,
                    qposadr=int(m.jnt_qposadr[jid]),
                    input=None if inp is None else index[inp],
                    motion=d.get("motion", "rotational"),
                    function=d["function"],
                    input_offset=float(d.get("input_offset", 0.0)),
                    output_offset=float(d.get("output_offset", 0.0)),
                )
            )
        return tuple(coords), tuple(deps)

    def _coordinates_from_mujoco(self):
        """Plain MJCF: joints driven by joint equalities become polynomial dependents."""
        m = self.mj_model
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
                    raise self._err(f"joint equality drives {m.joint(j).name!r} from {m.joint(j2).name!r}, itself driven")
                fn = {"type": "polynomial", "coefficients": [float(c) for c in poly[::-1]]}
                inp, in_off = coord_of_joint[j2], float(m.qpos0[m.jnt_qposadr[j2]])
            deps.append(DependentJoint(m.joint(j).name, j, adr, inp, motion, fn, in_off, float(m.qpos0[adr])))
        return tuple(coords), tuple(deps)

    def _scale_groups(self, groups: list[dict] | None) -> tuple[ScaleGroup, ...]:
        movable = tuple(self.body_names[1:])
        if groups is None:
            # Plain MJCF: one group per body, so any segment can be scaled by name.
            groups = [{"name": "overall", "bodies": list(movable), "per_axis": False}] + [
                {"name": b, "bodies": [b], "per_axis": False} for b in movable if b
            ]
        out = []
        names = set()
        for i, g in enumerate(groups):
            if g["name"] in names:
                raise self._err(f"metadata scale_groups[{i}]: duplicate group name {g['name']!r}")
            names.add(g["name"])
            for b in g["bodies"]:
                if b not in self.body_names:
                    raise self._err(f"metadata scale_groups[{i}] ({g['name']!r}) names body {b!r}, which the MJCF lacks")
            out.append(ScaleGroup(g["name"], tuple(g["bodies"]), bool(g.get("per_axis", False))))
        if "overall" not in names:
            out.insert(0, ScaleGroup("overall", movable, False))
        return tuple(out)

    def _marker_sets(self, sets: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, str]]:
        site_index = {n: i for i, n in enumerate(self.site_names)}
        out = {}
        for set_name, table in sets.items():
            for kp, site in table.items():
                if site not in site_index:
                    raise self._err(f"marker set {set_name!r}: keypoint {kp!r} names site {site!r}, which the MJCF lacks")
            out[set_name] = dict(table)
        return out

    def _build_tables(self):
        nb = self.mj_model.nbody
        names: list[str] = []
        members: list[np.ndarray] = []
        for g in self.scale_groups:
            ids = [self.body_names.index(b) for b in g.bodies]
            axes = ("x", "y", "z") if g.per_axis else (None,)
            for k, ax in enumerate(axes):
                mask = np.zeros((nb, 3), bool)
                if ax is None:
                    mask[ids, :] = True
                else:
                    mask[ids, k] = True
                members.append(mask)
                names.append(g.name if ax is None else f"{g.name}.{ax}")
        self.scale_param_names = tuple(names)
        self._scale_members = np.stack(members, axis=-1) if members else np.zeros((nb, 3, 0), bool)
        self._coord_ranges = np.array([c.range for c in self.coordinates], dtype=float).reshape(-1, 2)
        self._dep_fns = tuple(functions.build(d.function) for d in self.dependents)
        # For translational dependents: the parent-body scale along the joint axis (see DependentJoint).
        m = self.mj_model
        self._dep_parent = []
        for d in self.dependents:
            body = int(m.jnt_bodyid[d.joint_id])
            rot = np.zeros(9)
            mujoco.mju_quat2Mat(rot, m.body_quat[body])
            self._dep_parent.append((int(m.body_parentid[body]), rot.reshape(3, 3) @ m.jnt_axis[d.joint_id]))

    # ----------------------------------------------------------------- public tables
    @property
    def coordinate_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.coordinates)

    @property
    def coordinate_ranges(self) -> np.ndarray:
        """(C, 2) lower and upper bounds, radians or metres."""
        return self._coord_ranges.copy()

    @property
    def coordinate_motion(self) -> tuple[str, ...]:
        return tuple(c.motion for c in self.coordinates)

    @property
    def scale_group_names(self) -> tuple[str, ...]:
        return tuple(g.name for g in self.scale_groups)

    @property
    def num_coordinates(self) -> int:
        return len(self.coordinates)

    def marker_names(self, marker_set: str | None = None) -> tuple[str, ...]:
        """Keypoint names in the order :meth:`markers` returns them."""
        if marker_set is None:
            return self.site_names
        return tuple(self._marker_set(marker_set))

    def marker_site_ids(self, marker_set: str | None = None) -> np.ndarray:
        if marker_set is None:
            return np.arange(len(self.site_names))
        return np.array([self.site_names.index(s) for s in self._marker_set(marker_set).values()], dtype=int)

    def _marker_set(self, name: str) -> dict[str, str]:
        if name not in self.marker_sets:
            raise KeyError(f"marker_set {name!r} is not one of this model's marker sets {sorted(self.marker_sets)}")
        return self.marker_sets[name]

    def default_params(self, dtype=None) -> BodyParams:
        """The identity: every scale 1, every offset 0."""
        return BodyParams.identity(len(self.scale_param_names), len(self.site_names), dtype)

    def neutral_coordinates(self) -> np.ndarray:
        """(C,) each coordinate's default value, clipped into its range."""
        d = np.array([c.default for c in self.coordinates], dtype=float)
        return np.clip(d, self._coord_ranges[:, 0], self._coord_ranges[:, 1])

    def with_scale_groups(
        self, groups: list[dict] | None = None, *, tie_left_right: bool = False, per_axis: tuple[str, ...] = ()
    ) -> "BiomechModel":
        """The same model with another scale-group configuration.

        Args:
            groups: replacement groups (``{"name", "bodies", "per_axis"}`` dicts); default: the current ones.
            tie_left_right: merge each ``<name>_r``/``<name>_l`` pair into one group ``<name>``.
            per_axis: names of groups to scale per axis (three parameters ``name.x/.y/.z``, body frame).
        """
        current = [
            {"name": g.name, "bodies": list(g.bodies), "per_axis": g.per_axis} for g in self.scale_groups
        ] if groups is None else [dict(g) for g in groups]
        if tie_left_right:
            merged: dict[str, dict] = {}
            for g in current:
                name = g["name"]
                base = name[:-2] if name.endswith(("_r", "_l")) else name
                partner = base + ("_l" if name.endswith("_r") else "_r")
                if base != name and any(h["name"] == partner for h in current):
                    merged.setdefault(base, {"name": base, "bodies": [], "per_axis": g.get("per_axis", False)})
                    merged[base]["bodies"] += g["bodies"]
                else:
                    merged[name] = g
            current = list(merged.values())
        names = {g["name"] for g in current}
        for name in per_axis:
            if name not in names:
                raise KeyError(f"per_axis names group {name!r}, not one of {sorted(names)}")
        for g in current:
            g["per_axis"] = g.get("per_axis", False) or g["name"] in per_axis
        metadata = dict(self.metadata, scale_groups=current)
        if "coordinates" not in self.metadata:
            # Plain MJCF: keep the coordinates derived from the MuJoCo model.
            return _with_tables(self, metadata)
        return BiomechModel(self.spec, self.mj_model, self.source, metadata)

    def scale_params(self, **by_name: float) -> BodyParams:
        """Identity params with the named scale parameters set, e.g. ``scale_params(thigh_r=1.05)``."""
        scales = np.ones(len(self.scale_param_names))
        for name, value in by_name.items():
            if name not in self.scale_param_names:
                raise KeyError(f"scale {name!r} is not one of {list(self.scale_param_names)}")
            scales[self.scale_param_names.index(name)] = value
        return self.default_params().replace(scales=jnp.asarray(scales))

    # ----------------------------------------------------------------- checks
    def check_params(self, params: BodyParams) -> None:
        """Raise ``ValueError`` naming the field whose shape does not fit this model."""
        p, s = len(self.scale_param_names), len(self.site_names)
        if jnp.shape(params.scales) != (p,):
            raise ValueError(f"params.scales has shape {jnp.shape(params.scales)}, expected ({p},) for scales {self.scale_param_names[:4]}...")
        if jnp.shape(params.offsets) != (s, 3):
            raise ValueError(f"params.offsets has shape {jnp.shape(params.offsets)}, expected ({s}, 3): one row per site")

    def _check_coords(self, coords) -> None:
        if jnp.shape(coords) != (self.num_coordinates,):
            raise ValueError(
                f"coords has shape {jnp.shape(coords)}, expected ({self.num_coordinates},) in model.coordinate_names order"
                " (use jax.vmap for batches)"
            )

    # ----------------------------------------------------------------- kinematics
    def body_scales(self, params_or_scales) -> Array:
        """(B, 3) the scale vector of every body, in its own frame (world is 1)."""
        scales = getattr(params_or_scales, "scales", params_or_scales)
        scales = jnp.asarray(scales)
        return jnp.prod(jnp.where(self._scale_members, scales, jnp.ones((), scales.dtype)), axis=-1)

    def coords_to_qpos(self, coords, params: BodyParams) -> Array:
        """(nq,) the MuJoCo qpos of the (statically scaled) model for these coordinates.

        Locked coordinates take their default; dependent joints are evaluated from their
        coordinate functions, translations scaled with their parent body.
        """
        self._check_coords(coords)
        self.check_params(params)
        coords = jnp.asarray(coords)
        dtype = jnp.result_type(coords.dtype, jnp.asarray(params.scales).dtype)
        locked = np.array([c.locked for c in self.coordinates], bool)
        defaults = np.array([c.default for c in self.coordinates])
        values = jnp.where(locked, defaults, coords) if locked.any() else coords
        qpos = jnp.asarray(self._qpos0, dtype)
        joint_idx = [i for i, c in enumerate(self.coordinates) if c.kind == "joint"]
        if joint_idx:
            adrs = np.array([self.coordinates[i].qposadr for i in joint_idx])
            qpos = qpos.at[adrs].set(values[np.array(joint_idx)])
        grouped: dict[tuple[str, int], list[int]] = {}
        for i, c in enumerate(self.coordinates):
            if c.kind in ("free", "ball"):
                grouped.setdefault((c.kind, c.qposadr), [None] * (6 if c.kind == "free" else 3))[c.component] = i
        for (kind, adr), idx in grouped.items():
            if any(i is None for i in idx):
                raise self._err(f"{kind} joint at qpos {adr} lacks some of its coordinates")
            if kind == "free":
                qpos = qpos.at[adr : adr + 3].set(values[np.array(idx[:3])])
                qpos = qpos.at[adr + 3 : adr + 7].set(rotvec_to_quat(values[np.array(idx[3:])]))
            else:
                qpos = qpos.at[adr : adr + 4].set(rotvec_to_quat(values[np.array(idx)]))
        if self.dependents:
            bscale = self.body_scales(params)
            for d, fn, (parent, axis) in zip(self.dependents, self._dep_fns, self._dep_parent):
                x = jnp.zeros((), dtype) if d.input is None else values[d.input] - d.input_offset
                y = fn(x)
                if d.motion == "translational":
                    y = y * jnp.linalg.norm(bscale[parent] * axis)
                qpos = qpos.at[d.qposadr].set(d.output_offset + y)
        return qpos

    def forward(self, coords, params: BodyParams, sites=None) -> Kinematics:
        """Body poses and site positions (world frame, metres) for coordinates (C,)."""
        qpos = self.coords_to_qpos(coords, params)
        return self._tree.forward(qpos, self.body_scales(params), params.offsets, sites)

    def forward_qpos(self, qpos, params: BodyParams, sites=None) -> Kinematics:
        """As :meth:`forward`, from a MuJoCo qpos (nq,)."""
        self.check_params(params)
        return self._tree.forward(jnp.asarray(qpos), self.body_scales(params), params.offsets, sites)

    def markers(self, coords, params: BodyParams, marker_set: str | None = None) -> Array:
        """(M, 3) marker positions, metres, world frame.

        With ``marker_set=None``, every site in the MuJoCo model's order; otherwise the
        set's keypoints in :meth:`marker_names` order.
        """
        return self.forward(coords, params, sites=self.marker_site_ids(marker_set)).site_xpos

    # ----------------------------------------------------------------- static twin
    def to_mujoco(self, params: BodyParams | None = None, total_mass: float | None = None) -> mujoco.MjModel:
        """A statically scaled ``MjModel`` compiled from an ``MjSpec`` (see :mod:`mjx_biomech.body.scaling`).

        A model loaded from a compiled ``MjModel`` has no spec; its copy is scaled field by
        field by the same rules and MuJoCo's ``mj_setConst`` recomputes the derived constants.
        ``total_mass`` (kg) rescales every mass and inertia after geometric scaling.
        """
        from mjx_biomech.body import scaling

        params = self.default_params() if params is None else params
        if self.spec is None:
            return scaling.scaled_compiled_model(self, params, total_mass)
        return scaling.scaled_spec(self, params, total_mass).compile()

    def to_mjcf(self, params: BodyParams | None, path: str | os.PathLike, total_mass: float | None = None) -> Path:
        """Write the statically scaled model as MJCF (atomically); returns the path."""
        from mjx_biomech.body import scaling

        return scaling.write_scaled_mjcf(self, self.default_params() if params is None else params, path, total_mass)

    def mjx_model(self, params: BodyParams | None = None):
        """An MJX model with this person's geometry and mass properties (dynamic scaling)."""
        from mjx_biomech.body import scaling

        return scaling.scaled_mjx_model(self, self.default_params() if params is None else params)

    def total_mass(self) -> float:
        return float(np.sum(self.mj_model.body_mass))

    def standing_height(self, params: BodyParams | None = None) -> float:
        """Metres from the lowest to the highest point of the body's geometry at neutral coordinates.

        Measured on MuJoCo's statically scaled model (``params``, default unscaled) from each
        non-world geom's box bounds turned into the world frame.
        """
        m = self.mj_model if params is None else self.to_mujoco(params)
        params = self.default_params() if params is None else params
        d = mujoco.MjData(m)
        d.qpos[:] = np.asarray(self.coords_to_qpos(jnp.asarray(self.neutral_coordinates()), params))
        mujoco.mj_kinematics(m, d)
        body_geoms = np.flatnonzero(m.geom_bodyid > 0)
        if body_geoms.size == 0:
            z = np.concatenate([d.xpos[1:, 2], d.site_xpos[:, 2]])
            return float(z.max() - z.min())
        rot = d.geom_xmat[body_geoms].reshape(-1, 3, 3)
        center = d.geom_xpos[body_geoms] + np.einsum("gij,gj->gi", rot, m.geom_aabb[body_geoms, :3])
        half = np.einsum("gj,gj->g", np.abs(rot[:, 2, :]), m.geom_aabb[body_geoms, 3:])
        return float((center[:, 2] + half).max() - (center[:, 2] - half).min())

    def __repr__(self) -> str:
        return (
            f"BiomechModel({self.source!r}: {self.num_coordinates} coordinates, {len(self.scale_groups)} scale groups, "
            f"{len(self.marker_sets)} marker sets, {len(self.site_names)} sites, {self.total_mass():.2f} kg)"
        )


# --------------------------------------------------------------------- loading
def _with_tables(model: BiomechModel, metadata: dict) -> BiomechModel:
    """A copy of a plain-MJCF model with new scale groups (coordinates still derived from MuJoCo)."""
    out = BiomechModel.__new__(BiomechModel)
    out.__dict__.update(model.__dict__)
    out.metadata = metadata
    out.scale_groups = out._scale_groups(metadata["scale_groups"])
    out._build_tables()
    return out


def sample_coordinates(model: BiomechModel, key: Array, n: int | None = None) -> Array:
    """Uniform random coordinates within the ranges: (C,) or (n, C)."""
    lo, hi = model.coordinate_ranges.T
    shape = (model.num_coordinates,) if n is None else (n, model.num_coordinates)
    return jax.random.uniform(key, shape, minval=lo, maxval=hi, dtype=jnp.result_type(float))
