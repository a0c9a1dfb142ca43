"""``BiomechModel``: a MuJoCo model with coordinates, scale groups and marker sets.

The model holds the MuJoCo ``MjSpec`` it was compiled from (so a statically scaled twin can be
compiled), the compiled ``MjModel``, and the tables read from the ``mjx_biomech`` metadata
(docs/model_format.md). It is a frozen dataclass built once by :meth:`BiomechModel.from_mujoco`;
everything computed from coordinates and :class:`BodyParams` is a pure JAX function.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from jax import Array

from mjx_biomech.body import functions
from mjx_biomech.body.kinematics import Kinematics, KinematicTree
from mjx_biomech.body.params import BodyParams
from mjx_biomech.body.rotations import rotvec_to_quat
from mjx_biomech.body.tables import (
    Coordinate,
    DependentJoint,
    ScaleGroup,
    coordinates_from_metadata,
    coordinates_from_mujoco,
    dependent_parents,
    read_marker_sets,
    read_only,
    read_scale_groups,
    scale_tables,
)
from mjx_biomech.errors import InputError


@dataclass(frozen=True, eq=False)
class BiomechModel:
    """A scalable, differentiable body model (see docs/model_format.md).

    Build one with :func:`load_model` or :meth:`from_mujoco`. Instances are frozen and compare
    and hash by identity, so a model can be a static argument of ``jax.jit``; a change is a new
    model (:meth:`with_scale_groups`). Every method that takes coordinates or
    :class:`BodyParams` is a pure JAX function (jit/vmap/grad).

    Attributes:
        spec: the ``MjSpec`` the model was compiled from; None for a model loaded from an ``MjModel``.
        mj_model: the compiled ``MjModel``.
        source: where the model came from (a path, ``myo_sim:<name>``, ``<MjSpec>``), for messages.
        metadata: the ``mjx_biomech`` metadata (read-only), with the current scale groups.
        body_names, site_names, joint_names: MuJoCo's names, in id order.
        coordinates: (C,) the independent coordinates; ``dependents``: joints driven by them.
        scale_groups: the scale groups; ``scale_param_names`` (P,) the parameters of
            ``BodyParams.scales`` in order (``name``, or ``name.x/.y/.z`` per axis).
        marker_sets: set name -> keypoint name -> site name (read-only).
    """

    spec: mujoco.MjSpec | None
    mj_model: mujoco.MjModel
    source: str
    metadata: Mapping[str, Any]
    body_names: tuple[str, ...]
    site_names: tuple[str, ...]
    joint_names: tuple[str, ...]
    coordinates: tuple[Coordinate, ...]
    dependents: tuple[DependentJoint, ...]
    scale_groups: tuple[ScaleGroup, ...]
    scale_param_names: tuple[str, ...]
    marker_sets: Mapping[str, Mapping[str, str]]
    _tree: KinematicTree
    _qpos0: np.ndarray  # (nq,) MuJoCo's reference qpos
    _scale_members: np.ndarray  # (B, 3, P) bool, see scale_tables
    _coord_ranges: np.ndarray  # (C, 2)
    _dep_fns: tuple[functions.Function, ...]
    _dep_splines: functions.SplineBank | None  # the splines among _dep_fns, evaluated together
    _dep_parent: tuple[tuple[int, np.ndarray], ...]  # see dependent_parents

    @classmethod
    def from_mujoco(
        cls, spec: mujoco.MjSpec | None, mj_model: mujoco.MjModel, source: str, metadata: Mapping | None = None
    ) -> BiomechModel:
        """The model of ``mj_model`` (compiled from ``spec``, None if unknown) and its metadata.

        ``metadata`` is the ``mjx_biomech`` metadata (docs/model_format.md); None for a plain
        MJCF, whose coordinates are its joints (joint equalities drive dependents) and whose
        scale groups are ``overall`` and one per body. Raises :class:`InputError` naming
        ``source`` and the metadata element that does not fit the MJCF.
        """
        meta = {} if metadata is None else metadata
        if not isinstance(meta, Mapping):
            raise InputError(f"{source}: metadata: expected a JSON object, got {type(meta).__name__}")
        m = mj_model
        body_names = tuple(m.body(i).name for i in range(m.nbody))
        site_names = tuple(m.site(i).name for i in range(m.nsite))
        if "coordinates" in meta:
            coordinates, dependents = coordinates_from_metadata(m, meta, source)
        else:
            coordinates, dependents = coordinates_from_mujoco(m, source)
        groups = read_scale_groups(meta.get("scale_groups"), body_names, f"{source}: metadata scale_groups")
        scale_param_names, scale_members = scale_tables(groups, body_names)
        return cls(
            spec=spec,
            mj_model=m,
            source=source,
            metadata=MappingProxyType(dict(meta)),
            body_names=body_names,
            site_names=site_names,
            joint_names=tuple(m.joint(i).name for i in range(m.njnt)),
            coordinates=coordinates,
            dependents=dependents,
            scale_groups=groups,
            scale_param_names=scale_param_names,
            marker_sets=read_marker_sets(meta.get("marker_sets", {}), site_names, source),
            _tree=KinematicTree(m),
            _qpos0=read_only(np.asarray(m.qpos0, dtype=float)),
            _scale_members=scale_members,
            _coord_ranges=read_only(np.array([c.range for c in coordinates], dtype=float).reshape(-1, 2)),
            _dep_fns=tuple(functions.build(d.function) for d in dependents),
            _dep_splines=functions.SplineBank(splines) if (splines := [
                d.function for d in dependents if d.function.get("type") in functions.SPLINE_TYPES]) else None,
            _dep_parent=dependent_parents(m, dependents),
        )

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

    def _marker_set(self, name: str) -> Mapping[str, str]:
        if name not in self.marker_sets:
            raise InputError(
                f"marker_set {name!r}: expected one of the marker sets of {self.source}: {sorted(self.marker_sets)}"
            )
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
        given = self.scale_groups if groups is None else read_scale_groups(groups, self.body_names, "with_scale_groups: groups")
        current = [{"name": g.name, "bodies": list(g.bodies), "per_axis": g.per_axis} for g in given]
        if tie_left_right:
            merged: dict[str, dict] = {}
            for g in current:
                name = g["name"]
                base = name[:-2] if name.endswith(("_r", "_l")) else name
                partner = base + ("_l" if name.endswith("_r") else "_r")
                if base != name and any(h["name"] == partner for h in current):
                    merged.setdefault(base, {"name": base, "bodies": [], "per_axis": g["per_axis"]})
                    merged[base]["bodies"] += g["bodies"]
                else:
                    merged[name] = g
            current = list(merged.values())
        names = {g["name"] for g in current}
        for name in per_axis:
            if name not in names:
                raise InputError(f"per_axis: group {name!r} is not a scale group; expected one of {sorted(names)}")
        for g in current:
            g["per_axis"] = g["per_axis"] or g["name"] in per_axis
        scale_groups = read_scale_groups(current, self.body_names, "with_scale_groups")
        scale_param_names, scale_members = scale_tables(scale_groups, self.body_names)
        return dataclasses.replace(
            self,
            metadata=MappingProxyType(dict(self.metadata, scale_groups=current)),
            scale_groups=scale_groups,
            scale_param_names=scale_param_names,
            _scale_members=scale_members,
        )

    def scale_params(self, **by_name: float) -> BodyParams:
        """Identity params with the named scale parameters set, e.g. ``scale_params(thigh_r=1.05)``."""
        scales = np.ones(len(self.scale_param_names))
        for name, value in by_name.items():
            if name not in self.scale_param_names:
                raise InputError(f"scale {name!r} is not one of {list(self.scale_param_names)}")
            scales[self.scale_param_names.index(name)] = value
        return self.default_params().replace(scales=jnp.asarray(scales))

    # ----------------------------------------------------------------- checks
    def check_params(self, params: BodyParams) -> None:
        """Raise :class:`InputError` naming the field whose shape does not fit this model."""
        p, s = len(self.scale_param_names), len(self.site_names)
        if jnp.shape(params.scales) != (p,):
            raise InputError(f"params.scales has shape {jnp.shape(params.scales)}, expected ({p},) for scales {self.scale_param_names[:4]}...")
        if jnp.shape(params.offsets) != (s, 3):
            raise InputError(f"params.offsets has shape {jnp.shape(params.offsets)}, expected ({s}, 3): one row per site")

    def _check_coords(self, coords) -> None:
        if jnp.shape(coords) != (self.num_coordinates,):
            raise InputError(
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
            if kind == "free":
                qpos = qpos.at[adr : adr + 3].set(values[np.array(idx[:3])])
                qpos = qpos.at[adr + 3 : adr + 7].set(rotvec_to_quat(values[np.array(idx[3:])]))
            else:
                qpos = qpos.at[adr : adr + 4].set(rotvec_to_quat(values[np.array(idx)]))
        if self.dependents:
            qpos = qpos.at[np.array([d.qposadr for d in self.dependents])].set(self._dependent_values(values, params, dtype))
        return qpos

    def _dependent_values(self, values, params: BodyParams, dtype) -> Array:
        """(D,) the dependent joints' qpos from their coordinates' ``values``: the splines among
        their functions evaluated together (:class:`~mjx_biomech.body.functions.SplineBank`), the
        others one by one, translations scaled with their parent body."""
        deps = self.dependents
        x = [jnp.zeros((), dtype) if d.input is None else values[d.input] - d.input_offset for d in deps]
        y = [None] * len(deps)
        splines = [i for i, d in enumerate(deps) if d.function.get("type") in functions.SPLINE_TYPES]
        if splines:
            for i, v in zip(splines, self._dep_splines(jnp.stack([x[i] for i in splines]))):
                y[i] = v
        for i, fn in enumerate(self._dep_fns):
            if y[i] is None:
                y[i] = fn(x[i])
        y = jnp.stack(y)
        translational = np.array([d.motion == "translational" for d in deps])
        if translational.any():
            parents = np.array([parent for parent, _ in self._dep_parent])
            axes = np.array([axis for _, axis in self._dep_parent], float)
            length = jnp.linalg.norm(self.body_scales(params)[parents] * jnp.asarray(axes, dtype), axis=-1)
            y = jnp.where(translational, y * length, y)
        return jnp.asarray([d.output_offset for d in deps], dtype) + y

    def forward(self, coords, params: BodyParams, sites=None) -> Kinematics:
        """Body poses and site positions (world frame, metres) for coordinates (C,)."""
        qpos = self.coords_to_qpos(coords, params)
        return self._tree.forward(qpos, self.body_scales(params), params.offsets, sites)

    def marker_jacobian(self, coords, params: BodyParams, sites=None) -> tuple[Kinematics, Array]:
        """Body and site poses (:meth:`forward`) and the derivative of the sites' positions with
        respect to the coordinates (S, 3, C).

        The tree's part is in closed form (:meth:`KinematicTree.coordinate_jacobian`), chained
        with the derivative of :meth:`coords_to_qpos` (coupled joints' functions, rotation vectors
        of ball and free joints); locked coordinates have zero columns. Several times cheaper than
        ``jax.jacfwd`` of :meth:`forward`, which pushes every coordinate through the whole walk.
        """
        dqpos, qpos = self._qpos_and_derivative(coords, params)
        # d qpos / d coords is sparse: each coordinate moves its own qpos entry (four for the
        # rotation vector of a ball or free joint) and the joints coupled to it.
        return self._tree.coordinate_jacobian(qpos, dqpos, self._qpos_of_coordinates(), self.body_scales(params),
                                              params.offsets, sites)

    def marker_normal_equations(self, coords, params: BodyParams, sites, site_weights, targets, with_twists: bool = False):
        """Newton's equations of ``½ Σ_s w_s |p_s − t_s|²`` in the coordinates, for models of
        hinges and slides (:attr:`has_normal_equations`): the poses, the gradient ``Jᵀr`` (C,),
        Gauss–Newton's ``JᵀJ`` (C, C) and the second-order term ``Σ r ∇²r`` (C, C), with
        ``r_s = √w_s (p_s − t_s)`` and ``J`` the marker Jacobian (:meth:`marker_jacobian`).

        In closed form from moments of the weighted sites below each body
        (:meth:`KinematicTree.normal_equations`), never forming ``J``; the second-order term is
        chained through the coupling functions' second derivatives.

        Args:
            sites: (S,) site ids; site_weights: (S,) (0 for a site not observed);
            targets: (S, 3) metres (any finite value where the weight is 0).
            with_twists: also return the pose's twists, for :meth:`marker_gradient_at`.
        """
        coords = jnp.asarray(coords)
        dqpos, qpos = self._qpos_and_derivative(coords, params)
        kin, g, JtJ, g_q, H_q, twists = self._tree.normal_equations(
            qpos, dqpos, self._qpos_of_coordinates(), self.body_scales(params), params.offsets, sites,
            jnp.asarray(site_weights), jnp.asarray(targets))
        g_q = jax.lax.stop_gradient(g_q)
        chained = jax.hessian(lambda c: jnp.dot(g_q, self.coords_to_qpos(c, params)))(coords)
        out = (kin, g, JtJ, dqpos.T @ H_q @ dqpos + chained)
        return (*out, twists) if with_twists else out

    def marker_gradient_at(self, twists, site_xpos, sites, site_weights, targets) -> Array:
        """The gradient (C,) of :meth:`marker_normal_equations`'s objective for other
        ``site_weights`` and ``targets``, at the pose whose site positions ``site_xpos`` (S, 3) and
        ``twists`` it returned: no kinematics (:meth:`KinematicTree.twist_gradient`)."""
        return self._tree.twist_gradient(twists, site_xpos, self._qpos_of_coordinates(), len(self.coordinates), sites,
                                         jnp.asarray(site_weights), jnp.asarray(targets))

    @property
    def has_normal_equations(self) -> bool:
        """Whether :meth:`marker_normal_equations` applies (every joint a hinge or a slide)."""
        return self._tree.hinges_and_slides

    def _qpos_and_derivative(self, coords, params: BodyParams) -> tuple[Array, Array]:
        """``d qpos / d coords`` (nq, C) and qpos (nq,)."""
        def qpos_of(c):
            qpos = self.coords_to_qpos(c, params)
            return qpos, qpos

        return jax.jacfwd(qpos_of, has_aux=True)(jnp.asarray(coords))

    def _qpos_of_coordinates(self) -> tuple[np.ndarray, np.ndarray]:
        """(qpos entry, coordinate) pairs where d qpos / d coordinate may be nonzero, grouped by
        coordinate, every coordinate present (a coordinate moving nothing pairs with entry 0)."""
        pairs = []
        for c, coord in enumerate(self.coordinates):
            a = coord.qposadr
            if coord.kind == "joint":
                pairs.append((a, c))
            elif coord.kind == "free" and coord.component < 3:
                pairs.append((a + coord.component, c))
            elif coord.kind in ("free", "ball"):
                a = a + 3 if coord.kind == "free" else a
                pairs += [(a + k, c) for k in range(4)]
            pairs += [(d.qposadr, c) for d in self.dependents if d.input == c]
            if not any(pc == c for _, pc in pairs):
                pairs.append((0, c))
        adr, col = np.array(pairs, dtype=int).T
        return adr, col

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
    def to_mujoco(
        self, params: BodyParams | None = None, total_mass: float | None = None, preserve_mass_distribution: bool = False
    ) -> mujoco.MjModel:
        """A statically scaled ``MjModel`` compiled from an ``MjSpec`` (see :mod:`mjx_biomech.body.static_model`).

        A model loaded from a compiled ``MjModel`` has no spec; its copy is scaled field by
        field by the same rules and MuJoCo's ``mj_setConst`` recomputes the derived constants.
        ``total_mass`` (kg) rescales the masses after geometric scaling, each body keeping its
        share of the unscaled model's mass with ``preserve_mass_distribution`` (OpenSim's
        ScaleTool option); inertias follow their body's mass.
        """
        from mjx_biomech.body import static_model

        params = self.default_params() if params is None else params
        if self.spec is None:
            return static_model.scaled_compiled_model(self, params, total_mass, preserve_mass_distribution)
        return static_model.scaled_spec(self, params, total_mass, preserve_mass_distribution).compile()

    def to_mjcf(
        self, params: BodyParams | None, path: str | os.PathLike, total_mass: float | None = None,
        preserve_mass_distribution: bool = False,
    ) -> Path:
        """Write the statically scaled model as MJCF (atomically); returns the path. Masses as
        :meth:`to_mujoco`."""
        from mjx_biomech.body import static_model

        params = self.default_params() if params is None else params
        return static_model.write_scaled_mjcf(self, params, path, total_mass, preserve_mass_distribution)

    def mjx_model(self, params: BodyParams | None = None):
        """An MJX model with this person's geometry and mass properties (dynamic scaling)."""
        from mjx_biomech.body import mjx_model

        return mjx_model.scaled_mjx_model(self, self.default_params() if params is None else params)

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
        d.qpos[:] = np.asarray(jax.jit(self.coords_to_qpos)(jnp.asarray(self.neutral_coordinates()), params))
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


def sample_coordinates(model: BiomechModel, key: Array, n: int | None = None) -> Array:
    """Uniform random coordinates within the ranges: (C,) or (n, C)."""
    lo, hi = model.coordinate_ranges.T
    shape = (model.num_coordinates,) if n is None else (n, model.num_coordinates)
    return jax.random.uniform(key, shape, minval=lo, maxval=hi, dtype=jnp.result_type(float))
