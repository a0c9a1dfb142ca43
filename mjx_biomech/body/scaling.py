"""Static and dynamic scaling of a body model: one rule, three consumers.

The rule, :func:`scaled_fields`, maps the fields of the unscaled compiled ``MjModel``, each
body's scale vector (in the body's frame) and each site's offset to the person's fields. It is
written with an array namespace ``xp``: NumPy evaluates it for the static models, ``jax.numpy``
on traced parameters for MJX and for :class:`~mjx_biomech.body.kinematics.KinematicTree`.

- Positions inside a body scale with that body's scale vector: a child's ``body_pos`` with its
  parent's; ``jnt_pos``, ``geom_pos``, ``site_pos`` (then plus the site's offset), ``cam_pos``,
  ``light_pos`` and ``body_ipos`` with the body's own. One exception: a body placed in its own
  joint-child-frame body (what the ``.osim`` converter makes of a CustomJoint whose child frame
  is offset in the child body; metadata ``opensim.frame_bodies``, see
  :func:`joint_frame_children`) is where the child frame's offset ``t`` in the body puts it,
  and that offset scales with the body's own scale vector along the body's own axes, as
  OpenSim's ScaleTool scales the child offset frame: ``body_pos = -Rᵀ t`` becomes
  ``-Rᵀ (s ⊙ t) = Q (s ⊙ Qᵀ body_pos)``, ``Q = Rᵀ`` the body's ``body_quat``. (Scaling it along
  the joint frame's axes, ``s ⊙ body_pos``, is the same for isotropic scales or an unrotated
  frame, and moves the body otherwise.)
- Sizes of geoms and sites follow the body scale expressed along the element's own axes (the
  stretch of each axis): boxes and ellipsoids per axis; capsule and cylinder radii by the mean
  of the two radial stretches, half-lengths by the axial one, and their axis turns with the
  stretched body (``geom_quat``); spheres, meshes and the rest by the mean; planes not at all.
  ``geom_rbound`` and ``geom_aabb`` follow from the scaled sizes as MuJoCo's compiler derives
  them (for meshes, the unscaled bounds times the axis stretches).
- Mass by ``s_x s_y s_z``; the second moment of the mass distribution ``C = tr(I)/2 - I``
  becomes ``C' = det(S) S C S`` (inertias follow ``s^5`` for isotropic scales). This is exact
  for per-axis scales too: where a body's principal frame is oblique to its axes, ``C'`` is
  re-diagonalised and ``body_iquat`` turns.
- Equality data: connect and weld anchors with their bodies; translational joint couplings
  (polynomial coefficients) with the parent body's scale along the joint axis.

Tendon and actuator length ranges follow the ratio of each reference length after and before
scaling (:func:`scaled_length_ranges`), once the scaled model's reference lengths are known.

Consumers: :mod:`~mjx_biomech.body.static_model` writes the values into a copy of the
``MjSpec`` and MuJoCo compiles it (so every derived constant is MuJoCo's), or into a copy of a
compiled ``MjModel`` and ``mj_setConst`` derives the constants;
:mod:`~mjx_biomech.body.mjx_model` replaces them in an ``mjx.Model`` and derives in JAX the
constants ``mj_setConst`` computes at ``qpos0`` that MJX reads;
:class:`~mjx_biomech.body.kinematics.KinematicTree` walks the tree with the scaled positions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from mjx_biomech.body.metadata import read_metadata
from mjx_biomech.body.rotations import mat_to_quat, quat_between, quat_mul, quats_to_mats_np

if TYPE_CHECKING:
    pass

_GEOM = mujoco.mjtGeom
_BOXES = (int(_GEOM.mjGEOM_BOX), int(_GEOM.mjGEOM_ELLIPSOID))
_TUBES = (int(_GEOM.mjGEOM_CAPSULE), int(_GEOM.mjGEOM_CYLINDER))
_PRIMITIVES = (int(_GEOM.mjGEOM_SPHERE), *_TUBES, *_BOXES)
_PLANE = int(_GEOM.mjGEOM_PLANE)

# Each position field and the body whose scale applies to it.
_POSITION_OWNERS = {
    "body_pos": lambda m: m.body_parentid,
    "body_ipos": lambda m: np.arange(m.nbody),
    "jnt_pos": lambda m: m.jnt_bodyid,
    "geom_pos": lambda m: m.geom_bodyid,
    "site_pos": lambda m: m.site_bodyid,
    "cam_pos": lambda m: m.cam_bodyid,
    "light_pos": lambda m: m.light_bodyid,
}


# ----------------------------------------------------------------------------- the rule
def scaled_fields(
    m0: mujoco.MjModel, bscale, offsets=None, xp=np, total_mass=None, preserve_mass_distribution: bool = False
) -> dict:
    """The person's ``MjModel`` fields, by the rule of this module.

    Args:
        m0: the unscaled compiled model.
        bscale: (nbody, 3) each body's scale vector in its own frame (row 0, the world, is 1).
        offsets: (nsite, 3) metres in the body frame, added to ``site_pos`` after scaling; None for 0.
        xp: ``numpy`` or ``jax.numpy`` (traceable in ``bscale``, ``offsets``).
        total_mass: kg; when given, the masses are rescaled by one factor to sum to it, from the
            geometrically scaled masses, or from the unscaled ones with ``preserve_mass_distribution``
            (each body keeps its share, as OpenSim's ScaleTool); inertias follow their body's mass.
    Returns:
        field name -> array of the ``MjModel`` field's shape: ``body_pos``, ``body_ipos``,
        ``jnt_pos``, ``geom_pos``, ``site_pos``, ``cam_pos``, ``light_pos`` (m); ``geom_size``,
        ``geom_quat``, ``geom_rbound``, ``geom_aabb``, ``site_size``; ``body_mass`` (kg),
        ``body_inertia`` (kg m², principal moments), ``body_iquat``; ``eq_data``.
    """
    out = scaled_positions(m0, bscale, offsets, xp)
    out.update(_scaled_geoms(m0, bscale, xp))
    site_axes = axis_scales(m0.site_quat, bscale[np.asarray(m0.site_bodyid)], xp)
    out["site_size"] = _scaled_sizes(m0.site_type, m0.site_size, site_axes, xp)
    out.update(scaled_mass_properties(m0, bscale, xp, total_mass, preserve_mass_distribution))
    out["eq_data"] = scaled_equality_data(m0, bscale, xp)
    return out


def scaled_positions(
    m0: mujoco.MjModel, bscale, offsets=None, xp=np, names=tuple(_POSITION_OWNERS), frame_children=None
) -> dict:
    """The position fields ``names`` (metres, in their body's frame) of :func:`scaled_fields`.

    ``frame_children``: the ids of :func:`joint_frame_children` (None: read from ``m0``'s metadata).
    """
    out = {}
    for name in names:
        owner = np.asarray(_POSITION_OWNERS[name](m0))
        out[name] = np.asarray(getattr(m0, name)) * bscale[owner]
    if "body_pos" in out:
        children = joint_frame_children(m0) if frame_children is None else np.asarray(frame_children, dtype=int)
        if len(children):
            out["body_pos"] = _frame_child_positions(m0, bscale, out["body_pos"], children, xp)
    if offsets is not None and "site_pos" in out:
        out["site_pos"] = out["site_pos"] + offsets
    return out


def joint_frame_children(m0: mujoco.MjModel) -> np.ndarray:
    """Ids (sorted) of the bodies whose parent is their own joint-child-frame body.

    The ``.osim`` converter puts a CustomJoint's child body, when the joint's child frame is
    offset in it, inside a body at that frame (named in the metadata's ``opensim.frame_bodies``,
    body -> frame body): the joints move the frame, and the body hangs below it at the inverse of
    the frame's offset. Such a body's ``body_pos`` scales with its own scale vector along its own
    axes (the module's docstring). Models without that metadata have none.
    """
    meta = read_metadata(m0)
    opensim = meta.get("opensim") if isinstance(meta, dict) else None
    frames = opensim.get("frame_bodies") if isinstance(opensim, dict) else None
    if not isinstance(frames, dict):
        return np.zeros(0, dtype=int)
    ids = set()
    for child, frame in frames.items():
        b = mujoco.mj_name2id(m0, mujoco.mjtObj.mjOBJ_BODY, str(child))
        f = mujoco.mj_name2id(m0, mujoco.mjtObj.mjOBJ_BODY, str(frame))
        if b > 0 and f > 0 and int(m0.body_parentid[b]) == f:
            ids.add(b)
    return np.array(sorted(ids), dtype=int)


def _frame_child_positions(m0: mujoco.MjModel, bscale, body_pos, children: np.ndarray, xp):
    """``body_pos`` with the rows ``children`` (bodies in their joint-child-frame body) replaced by
    ``Q (s ⊙ Qᵀ p)``: ``p`` the unscaled ``body_pos``, ``Q`` the body's orientation in the frame
    body, ``s`` the body's own scale vector (the frame's offset in the body scaled along the
    body's axes)."""
    q = quats_to_mats_np(np.asarray(m0.body_quat)[children])  # (K, 3, 3): body axes in the frame body
    local = np.einsum("kji,kj->ki", q, np.asarray(m0.body_pos)[children])  # Qᵀ p: the position along the body's axes
    scaled = xp.einsum("kij,kj->ki", q, bscale[children] * local)
    rest = np.setdiff1d(np.arange(m0.nbody), children)
    return _assemble(m0.nbody, [(rest, body_pos[rest]), (children, scaled)], xp)


def _assemble(n: int, parts, xp):
    """Rows computed for disjoint index sets ``parts`` ((indices, rows) pairs) put in order 0..n-1.

    Each kind of element gets its own formula on its own rows, with no ``where`` across kinds
    (whose gradient would carry the NaNs of formulas evaluated on the wrong kind).
    """
    nonempty = [(np.asarray(i), v) for i, v in parts if len(i)]
    if not nonempty:
        return parts[0][1]
    parts = nonempty
    index = np.concatenate([i for i, _ in parts])
    assert len(index) == n and np.array_equal(np.sort(index), np.arange(n))
    return xp.concatenate([v for _, v in parts])[np.argsort(index)]


def axis_scales(quats, s, xp):
    """(N, 3) how much each axis of N frames (orientation ``quats`` in the body) stretches under ``s`` (N, 3)."""
    rot = quats_to_mats_np(quats)
    return xp.sqrt(xp.sum((s[:, :, None] * rot) ** 2, axis=1))


def _scaled_sizes(types, size, axes, xp):
    """Sizes (N, 3) of geoms or sites of MuJoCo ``types`` (N,) given their axis stretches (N, 3)."""
    types = np.asarray(types)
    size = np.asarray(size)
    kinds = {
        "boxes": np.flatnonzero(np.isin(types, _BOXES)),
        "tubes": np.flatnonzero(np.isin(types, _TUBES)),
        "planes": np.flatnonzero(types == _PLANE),
    }
    rest = np.setdiff1d(np.arange(len(types)), np.concatenate(list(kinds.values())))
    tubes = axes[kinds["tubes"]]
    radial = 0.5 * (tubes[:, :1] + tubes[:, 1:2])
    return _assemble(len(types), [
        (kinds["boxes"], size[kinds["boxes"]] * axes[kinds["boxes"]]),
        (kinds["tubes"], size[kinds["tubes"]] * xp.concatenate([radial, tubes[:, 2:], xp.ones_like(radial)], axis=1)),
        (kinds["planes"], xp.asarray(size[kinds["planes"]], dtype=axes.dtype)),
        (rest, size[rest] * xp.mean(axes[rest], axis=1, keepdims=True)),
    ], xp)


def _scaled_geoms(m0: mujoco.MjModel, bscale, xp) -> dict:
    """``geom_size``, ``geom_quat``, ``geom_rbound`` and ``geom_aabb`` of :func:`scaled_fields`."""
    types = np.asarray(m0.geom_type)
    s = bscale[np.asarray(m0.geom_bodyid)]
    axes = axis_scales(m0.geom_quat, s, xp)
    size = _scaled_sizes(types, m0.geom_size, axes, xp)

    # A capsule's or cylinder's axis is a direction in its body: it turns where the body is
    # stretched unevenly (the pose MuJoCo's compiler gives a scaled ``fromto``).
    tubes = np.flatnonzero(np.isin(types, _TUBES))
    others = np.setdiff1d(np.arange(len(types)), tubes)
    quat0 = np.asarray(m0.geom_quat)
    axis = quats_to_mats_np(quat0[tubes])[:, :, 2]
    stretched = s[tubes] * axis
    stretched = stretched / xp.sqrt(xp.sum(stretched**2, axis=1, keepdims=True))
    quat = _assemble(len(types), [
        (tubes, quat_mul(quat_between(axis, stretched, xp), quat0[tubes], xp)),
        (others, xp.asarray(quat0[others], dtype=bscale.dtype)),
    ], xp)

    # Bounding sphere and box, as the compiler derives them from the sizes.
    rbound0, aabb0 = np.asarray(m0.geom_rbound), np.asarray(m0.geom_aabb)
    kind = {t: np.flatnonzero(types == t) for t in _PRIMITIVES}
    planes = np.flatnonzero(types == _PLANE)
    rest = np.setdiff1d(np.arange(len(types)), np.concatenate([*kind.values(), planes]))
    sz = {t: size[i] for t, i in kind.items()}
    sphere, capsule, cylinder = sz[int(_GEOM.mjGEOM_SPHERE)], sz[int(_GEOM.mjGEOM_CAPSULE)], sz[int(_GEOM.mjGEOM_CYLINDER)]
    box, ellipsoid = sz[int(_GEOM.mjGEOM_BOX)], sz[int(_GEOM.mjGEOM_ELLIPSOID)]
    rbound = _assemble(len(types), [
        (kind[int(_GEOM.mjGEOM_SPHERE)], sphere[:, 0]),
        (kind[int(_GEOM.mjGEOM_CAPSULE)], capsule[:, 0] + capsule[:, 1]),
        (kind[int(_GEOM.mjGEOM_CYLINDER)], xp.sqrt(cylinder[:, 0] ** 2 + cylinder[:, 1] ** 2)),
        (kind[int(_GEOM.mjGEOM_ELLIPSOID)], xp.max(ellipsoid, axis=1)),
        (kind[int(_GEOM.mjGEOM_BOX)], xp.sqrt(xp.sum(box**2, axis=1))),
        (planes, xp.asarray(rbound0[planes], dtype=bscale.dtype)),
        (rest, rbound0[rest] * xp.max(axes[rest], axis=1)),
    ], xp)

    def centred(*half):
        """aabb rows of primitives: centre 0, then the half extents."""
        return xp.concatenate([xp.zeros((half[0].shape[0], 3), dtype=half[0].dtype), *half], axis=1)

    half = [
        (kind[int(_GEOM.mjGEOM_SPHERE)], centred(sphere[:, :1], sphere[:, :1], sphere[:, :1])),
        (kind[int(_GEOM.mjGEOM_CAPSULE)], centred(capsule[:, :1], capsule[:, :1], capsule[:, :1] + capsule[:, 1:2])),
        (kind[int(_GEOM.mjGEOM_CYLINDER)], centred(cylinder[:, :1], cylinder[:, :1], cylinder[:, 1:2])),
        (kind[int(_GEOM.mjGEOM_ELLIPSOID)], centred(ellipsoid)),
        (kind[int(_GEOM.mjGEOM_BOX)], centred(box)),
        (planes, xp.asarray(aabb0[planes], dtype=bscale.dtype)),
        (rest, aabb0[rest] * xp.concatenate([axes[rest], axes[rest]], axis=1)),
    ]
    return {"geom_size": size, "geom_quat": quat, "geom_rbound": rbound, "geom_aabb": _assemble(len(types), half, xp)}


@jax.custom_jvp
def _eigh(a):
    w, v = jnp.linalg.eigh(a)
    return w, v


@_eigh.defjvp
def _eigh_jvp(primals, tangents):
    """``jnp.linalg.eigh``'s derivative with the eigenvector terms of equal eigenvalues dropped.

    Where two eigenvalues coincide their eigenvectors are not differentiable and JAX's rule
    divides by 0 (NaN). Dropping those terms keeps the gradient finite. It is exact wherever the
    eigenvalues differ, and where they coincide for perturbations that keep them equal (an
    isotropic scale); for per-axis perturbations that split them, the part of the derivative
    that would turn the frame within their plane is lost (no decomposition is differentiable there).
    """
    (a,), (da,) = primals, tangents
    w, v = _eigh(a)
    vt_da_v = jnp.swapaxes(v, -1, -2) @ (0.5 * (da + jnp.swapaxes(da, -1, -2))) @ v
    gap = w[..., None, :] - w[..., :, None]
    distinct = jnp.abs(gap) > 1e-12 * jnp.max(jnp.abs(w), axis=-1, keepdims=True)[..., None] + 1e-300
    f = jnp.where(distinct, 1.0 / jnp.where(distinct, gap, 1.0), 0.0)
    return (w, v), (jnp.diagonal(vt_da_v, axis1=-2, axis2=-1), v @ (f * vt_da_v))


def scaled_mass_properties(
    m0: mujoco.MjModel, bscale, xp=np, total_mass=None, preserve_mass_distribution: bool = False
) -> dict:
    """``body_mass``, ``body_inertia``, ``body_iquat`` and ``body_ipos`` of :func:`scaled_fields`.

    The scaled second moment in the old principal frame ``R`` is ``det(S) T diag(c) T`` with
    ``T = R^T S R``. Where ``R`` is a signed permutation of the body axes (the usual case) ``T``
    is diagonal and the frame is kept; elsewhere the matrix is diagonalised (in JAX with a
    gradient that stays finite where two moments coincide, see :func:`_eigh_jvp`).
    """
    det = xp.prod(bscale, axis=1)
    mass = np.asarray(m0.body_mass) * det
    inertia0 = np.asarray(m0.body_inertia)
    moment0 = 0.5 * inertia0.sum(axis=1, keepdims=True) - inertia0  # second moments along the principal axes
    quat0 = np.asarray(m0.body_iquat)
    rot0 = quats_to_mats_np(quat0)
    aligned = np.all(np.abs(rot0).max(axis=1) > 1 - 1e-12, axis=1)
    a, o = np.flatnonzero(aligned), np.flatnonzero(~aligned)

    # Aligned frames: principal axis k is body axis perm[k].
    perm = np.abs(rot0[a]).argmax(axis=1)
    s_principal = xp.take_along_axis(bscale[a], perm, axis=1)
    moment_a = det[a, None] * s_principal**2 * moment0[a]

    moments = [(a, moment_a)]
    quats = [(a, xp.asarray(quat0[a], dtype=bscale.dtype))]
    if len(o):
        t = xp.einsum("bji,bj,bjk->bik", rot0[o], bscale[o], rot0[o])
        scaled = det[o, None, None] * (t * moment0[o][:, None, :]) @ t
        moment_o, axes = np.linalg.eigh(scaled) if xp is np else _eigh(scaled)
        # A proper rotation: flip the first axis where the eigenvectors form a left-handed frame.
        handed = xp.concatenate([xp.sign(xp.linalg.det(axes))[:, None], xp.ones_like(axes[:, 0, 1:])], axis=1)
        moments.append((o, moment_o))
        quats.append((o, mat_to_quat(rot0[o] @ (axes * handed[:, None, :]), xp)))
    nbody = m0.nbody
    moment = _assemble(nbody, moments, xp)
    quat = _assemble(nbody, quats, xp)
    if total_mass is not None:
        start = xp.asarray(m0.body_mass) if preserve_mass_distribution else mass
        target = start * (total_mass / xp.sum(start))
        # Inertias follow the mass of their body (a massless body keeps its geometric inertia).
        ratio = xp.where(mass > 0, target / xp.where(mass > 0, mass, 1.0), 1.0)
        mass, moment = target, moment * ratio[:, None]
    # Round-off must not push a rod (one moment 0) across the triangle inequality, or MuJoCo's
    # compiler would "balance" it into a sphere: with c >= 0, each sum of two is >= the third.
    moment = xp.maximum(moment, 0.0)
    inertia = xp.stack([moment[:, 1] + moment[:, 2], moment[:, 0] + moment[:, 2], moment[:, 0] + moment[:, 1]], axis=1)
    return {
        "body_mass": mass,
        "body_inertia": inertia,
        "body_iquat": quat,
        "body_ipos": np.asarray(m0.body_ipos) * bscale,
    }


def full_inertia(inertia, iquat) -> np.ndarray:
    """(B, 3, 3) inertia matrices in the body frames (kg m²) from principal moments (B, 3) and their frames (B, 4)."""
    rot = quats_to_mats_np(iquat)
    return rot * np.asarray(inertia)[:, None, :] @ rot.transpose(0, 2, 1)


def scaled_equality_data(m0: mujoco.MjModel, bscale, xp=np):
    """(neq, mjNEQDATA) equality data: anchors of connect and weld constraints with their
    bodies, translational joint couplings (a slide driven by a polynomial) with the parent body's
    scale along the joint axis. Tendon couplings are kept as they are."""
    data = np.asarray(m0.eq_data)
    kind = np.asarray(m0.eq_type)
    obj1, obj2 = np.asarray(m0.eq_obj1id), np.asarray(m0.eq_obj2id)
    on_site = np.asarray(m0.eq_objtype) == int(mujoco.mjtObj.mjOBJ_SITE)
    body1, body2 = obj1.copy(), obj2.copy()
    body1[on_site] = np.asarray(m0.site_bodyid)[obj1[on_site]]
    body2[on_site] = np.asarray(m0.site_bodyid)[obj2[on_site]]
    connect = np.flatnonzero(kind == int(mujoco.mjtEq.mjEQ_CONNECT))
    weld = np.flatnonzero(kind == int(mujoco.mjtEq.mjEQ_WELD))
    slides = np.flatnonzero(np.asarray(m0.jnt_type) == int(mujoco.mjtJoint.mjJNT_SLIDE))
    coupled = np.flatnonzero((kind == int(mujoco.mjtEq.mjEQ_JOINT)) & np.isin(obj1, slides))
    rest = np.setdiff1d(np.arange(len(kind)), np.concatenate([connect, weld, coupled]))
    tail = data.shape[1] - 6

    def ones(rows, n):
        return xp.ones((len(rows), n), dtype=bscale.dtype)

    joint_body = np.asarray(m0.jnt_bodyid)[obj1[coupled]]
    axis = np.einsum("jik,jk->ji", quats_to_mats_np(m0.body_quat[joint_body]), m0.jnt_axis[obj1[coupled]])
    along = xp.sqrt(xp.sum((bscale[np.asarray(m0.body_parentid)[joint_body]] * axis) ** 2, axis=1, keepdims=True))
    factor = _assemble(len(kind), [
        (connect, xp.concatenate([bscale[body1[connect]], bscale[body2[connect]], ones(connect, tail)], axis=1)),
        (weld, xp.concatenate([bscale[body2[weld]], bscale[body1[weld]], ones(weld, tail)], axis=1)),
        (coupled, xp.concatenate([along * np.ones(5), ones(coupled, data.shape[1] - 5)], axis=1)),
        (rest, ones(rest, data.shape[1])),
    ], xp)
    return data * factor


def scaled_length_ranges(m0: mujoco.MjModel, tendon_length0, actuator_length0, xp=np) -> dict:
    """``tendon_range``, ``tendon_lengthspring`` and ``actuator_lengthrange`` scaled by the ratio
    of each tendon's (actuator's) reference length in the scaled model (``tendon_length0``,
    ``actuator_length0``) to the unscaled one's."""

    def ratio(new, old):
        old = np.asarray(old)
        return xp.where(old > 0, new / np.where(old > 0, old, 1.0), 1.0)

    t_ratio = ratio(tendon_length0, m0.tendon_length0)[:, None]
    springs = np.all(np.asarray(m0.tendon_lengthspring) >= 0, axis=1)[:, None]
    return {
        "tendon_range": np.asarray(m0.tendon_range) * t_ratio,
        "tendon_lengthspring": xp.where(springs, np.asarray(m0.tendon_lengthspring) * t_ratio, np.asarray(m0.tendon_lengthspring)),
        "actuator_lengthrange": np.asarray(m0.actuator_lengthrange) * ratio(actuator_length0, m0.actuator_length0)[:, None],
    }
