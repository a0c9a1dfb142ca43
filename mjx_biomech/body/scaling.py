"""Static and dynamic scaling of a body model.

Static: the model's ``MjSpec`` is copied and every length inside a body is multiplied by that
body's scale vector (positions of child bodies, frames, joints, sites, geoms, cameras and
lights; geom and site sizes; mesh scales; equality anchors; translational joint-coupling
polynomials), and mass properties are set explicitly from the compiled model: mass by
``s_x s_y s_z``, and the second moment of the mass distribution ``C' = det(S) S C S`` so
inertias follow ``s^5`` for isotropic scales. MuJoCo then compiles the person's own model, so
every derived constant is MuJoCo's. Muscle and tendon length ranges are rescaled by the ratio
of each actuator's (tendon's) reference length after and before scaling.

Dynamic: the same field updates on an ``mjx.Model`` without recompiling (for RL and fitting).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import jax.numpy as jnp
import mujoco
import numpy as np

from mjx_biomech.body.params import BodyParams
from mjx_biomech.body.rotations import quat_to_mat_np
from mjx_biomech.io import atomic_write

if TYPE_CHECKING:
    from mjx_biomech.body.model import BiomechModel


def scaled_inertia(mass: float, inertia: np.ndarray, iquat: np.ndarray, s: np.ndarray):
    """Mass, full inertia matrix (body frame) after scaling a body's mass distribution by ``s``.

    Args:
        mass: kg. inertia: (3,) principal moments. iquat: (4,) principal frame in the body frame.
        s: (3,) scale along the body axes.
    Returns:
        (mass', (3, 3) inertia about the centre of mass, body-frame axes).
    """
    r = quat_to_mat_np(iquat)
    inertia_body = r @ np.diag(inertia) @ r.T
    second_moment = 0.5 * np.trace(inertia_body) * np.eye(3) - inertia_body
    det = float(np.prod(s))
    scaled_moment = det * (np.diag(s) @ second_moment @ np.diag(s))
    return mass * det, np.trace(scaled_moment) * np.eye(3) - scaled_moment


def principal_inertia(inertia: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Principal moments (3,) and the quaternion of their axes for a (3, 3) inertia matrix.

    Rod-like bodies sit exactly on the triangle inequality; the eigen-decomposition's round-off
    must not push them across it, or MuJoCo's compiler would "balance" them into a sphere.
    """
    moments, axes = np.linalg.eigh(inertia)
    if np.linalg.det(axes) < 0:
        axes[:, 0] = -axes[:, 0]
    moments[2] = min(moments[2], moments[0] + moments[1])
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, axes.reshape(-1))
    return moments, quat


def _axis_scales(quat, s: np.ndarray) -> np.ndarray:
    """(3,) how much each axis of a frame (orientation ``quat`` in the body) stretches under ``s``."""
    return np.linalg.norm(s[:, None] * quat_to_mat_np(quat), axis=0)


def _size_scale(s: np.ndarray) -> float:
    return float(np.mean(s))


def _geom_size(gtype, size: np.ndarray, s_geom: np.ndarray) -> np.ndarray:
    """Scale a geom's size given the body scale expressed along the geom's own axes."""
    size = np.array(size, float)
    if gtype in (mujoco.mjtGeom.mjGEOM_BOX, mujoco.mjtGeom.mjGEOM_ELLIPSOID):
        return size * s_geom
    if gtype in (mujoco.mjtGeom.mjGEOM_CAPSULE, mujoco.mjtGeom.mjGEOM_CYLINDER):
        size[0] *= 0.5 * (s_geom[0] + s_geom[1])
        size[1] *= s_geom[2]
        return size
    if gtype == mujoco.mjtGeom.mjGEOM_PLANE:
        return size
    return size * _size_scale(s_geom)


def scaled_mass_properties(m0: mujoco.MjModel, bscale: np.ndarray, total_mass: float | None = None) -> dict:
    """Body id -> (mass, principal moments, iquat, ipos) of every massive body after scaling.

    ``total_mass`` (kg), when given, rescales every mass and inertia after geometric scaling.
    """
    scaled = {
        b: (*scaled_inertia(m0.body_mass[b], m0.body_inertia[b], m0.body_iquat[b], bscale[b]), m0.body_ipos[b] * bscale[b])
        for b in range(1, m0.nbody)
        if m0.body_mass[b] > 0
    }
    factor = 1.0 if total_mass is None else total_mass / sum(v[0] for v in scaled.values())
    out = {}
    for b, (mass, inertia, ipos) in scaled.items():
        moments, quat = principal_inertia(inertia * factor)
        out[b] = (mass * factor, moments, quat, ipos)
    return out


def scaled_equality_data(m0: mujoco.MjModel, e: int, data: np.ndarray, bscale: np.ndarray) -> np.ndarray:
    """Equality ``e``'s data with anchors (connect, weld) and translational couplings scaled."""
    data = np.array(data, float)
    kind, obj1, obj2 = int(m0.eq_type[e]), m0.eq_obj1id[e], m0.eq_obj2id[e]
    if kind == int(mujoco.mjtEq.mjEQ_CONNECT):
        data[0:3] *= bscale[obj1]
        data[3:6] *= bscale[obj2]
    elif kind == int(mujoco.mjtEq.mjEQ_WELD):
        data[0:3] *= bscale[obj2]
        data[3:6] *= bscale[obj1]
    elif kind == int(mujoco.mjtEq.mjEQ_JOINT) and int(m0.jnt_type[obj1]) == int(mujoco.mjtJoint.mjJNT_SLIDE):
        body = m0.jnt_bodyid[obj1]
        axis = quat_to_mat_np(m0.body_quat[body]) @ m0.jnt_axis[obj1]
        data[0:5] *= np.linalg.norm(bscale[m0.body_parentid[body]] * axis)
    return data


def scaled_spec(model: "BiomechModel", params: BodyParams, total_mass: float | None = None) -> mujoco.MjSpec:
    """A copy of the model's ``MjSpec`` with this person's geometry and mass properties."""
    if model.spec is None:
        raise ValueError(
            f"{model.source}: this model was loaded from a compiled MjModel, which keeps no MjSpec; "
            "load it from its MJCF path, an MjSpec or 'myo_sim:<name>' to build a statically scaled model"
        )
    model.check_params(params)
    m0 = model.mj_model
    bscale = np.asarray(model.body_scales(params), dtype=float)
    offsets = np.asarray(params.offsets, dtype=float)
    spec = model.spec.copy()
    spec.compile()  # assigns element ids, matching the compiled model's indices

    def owner_scale(element) -> np.ndarray:
        parent = element.parent
        return bscale[parent.id] if parent is not None else np.ones(3)

    for body in spec.bodies[1:]:
        body.pos = np.asarray(body.pos) * owner_scale(body)
    for frame in spec.frames:
        frame.pos = np.asarray(frame.pos) * owner_scale(frame)
    for joint in spec.joints:
        joint.pos = np.asarray(joint.pos) * owner_scale(joint)
    for site in spec.sites:
        s = owner_scale(site)
        site.pos = np.asarray(site.pos) * s + offsets[site.id]
        site.size = np.asarray(site.size) * _size_scale(s)
        if not np.isnan(site.fromto[0]):
            raise ValueError(f"{model.source}: site {site.name!r} uses fromto; scaling needs pos/quat sites")
    for cam in spec.cameras:
        cam.pos = np.asarray(cam.pos) * owner_scale(cam)
    for light in spec.lights:
        light.pos = np.asarray(light.pos) * owner_scale(light)

    mesh_scales: dict[str, dict[tuple, list]] = {}
    for geom in spec.geoms:
        s = owner_scale(geom)
        gid = geom.id
        if not np.isnan(geom.fromto[0]):
            geom.fromto = np.asarray(geom.fromto) * np.tile(s, 2)
            geom.size = _geom_size(geom.type, geom.size, _axis_scales(m0.geom_quat[gid], s))
        else:
            geom.pos = np.asarray(geom.pos) * s
            s_geom = _axis_scales(m0.geom_quat[gid], s)
            if geom.type == mujoco.mjtGeom.mjGEOM_MESH:
                mesh_scales.setdefault(geom.meshname, {}).setdefault(tuple(s), []).append(geom)
            else:
                geom.size = _geom_size(geom.type, geom.size, s_geom)
        if geom.mass > 0:
            geom.mass = geom.mass * float(np.prod(s))

    _scale_meshes(spec, mesh_scales)

    properties = scaled_mass_properties(m0, bscale, total_mass)
    for body in spec.bodies[1:]:
        if body.id not in properties:
            continue
        body.explicitinertial = True
        body.mass, body.inertia, body.iquat, body.ipos = properties[body.id]
        body.fullinertia = [np.nan, 0.0, 0.0, 0.0, 0.0, 0.0]
    spec.compiler.inertiafromgeom = mujoco.mjtInertiaFromGeom.mjINERTIAFROMGEOM_AUTO

    for eq in spec.equalities:
        eq.data = scaled_equality_data(m0, eq.id, eq.data, bscale)

    scaled = spec.compile()
    _rescale_lengths(spec, m0, scaled)
    return spec


def _scale_meshes(spec: mujoco.MjSpec, mesh_scales: dict[str, dict[tuple, list]]) -> None:
    by_name = {mesh.name: mesh for mesh in spec.meshes}
    for name, scales in mesh_scales.items():
        mesh = by_name[name]
        if len(scales) == 1:
            (s,) = scales
            mesh.scale = np.asarray(mesh.scale) * np.array(s)
            continue
        # A mesh shared by bodies of different scales gets one copy per scale.
        for k, (s, geoms) in enumerate(scales.items()):
            copy = spec.add_mesh()
            copy.name = f"{name}__scaled{k}"
            copy.file = mesh.file
            copy.content_type = mesh.content_type
            copy.refpos = mesh.refpos
            copy.refquat = mesh.refquat
            copy.inertia = mesh.inertia
            copy.smoothnormal = mesh.smoothnormal
            copy.maxhullvert = mesh.maxhullvert
            copy.uservert = mesh.uservert
            copy.userface = mesh.userface
            copy.usernormal = mesh.usernormal
            copy.scale = np.asarray(mesh.scale) * np.array(s)
            for geom in geoms:
                geom.meshname = copy.name


def _rescale_lengths(spec: mujoco.MjSpec, m0: mujoco.MjModel, scaled: mujoco.MjModel) -> None:
    """Tendon and actuator length ranges follow each path's change in reference length."""
    for tendon in spec.tendons:
        t = tendon.id
        ratio = scaled.tendon_length0[t] / m0.tendon_length0[t] if m0.tendon_length0[t] > 0 else 1.0
        if tendon.range[1] > tendon.range[0]:
            tendon.range = np.asarray(tendon.range) * ratio
        if np.all(np.asarray(tendon.springlength) >= 0):
            tendon.springlength = np.asarray(tendon.springlength) * ratio
    for act in spec.actuators:
        a = act.id
        if m0.actuator_length0[a] > 0 and np.any(np.asarray(act.lengthrange) != 0):
            act.lengthrange = np.asarray(act.lengthrange) * (scaled.actuator_length0[a] / m0.actuator_length0[a])


def write_scaled_mjcf(model: "BiomechModel", params: BodyParams, path, total_mass: float | None = None) -> Path:
    """Write the statically scaled model's MJCF atomically, meshes referenced by absolute path."""
    spec = scaled_spec(model, params, total_mass)
    spec.compile()
    for body in spec.bodies[1:]:
        # The XML writer keeps 6 significant digits; rounding must not push a rod-like body's
        # principal moments across the triangle inequality, which MuJoCo refuses to load.
        moments = np.sort(np.asarray(body.inertia, dtype=float))
        if body.explicitinertial and moments[2] > (moments[0] + moments[1]) * (1 - 2e-5):
            limit = (moments[0] + moments[1]) * (1 - 2e-5)
            body.inertia = np.minimum(np.asarray(body.inertia, dtype=float), limit)
    if spec.meshdir and model.source and os.path.exists(model.source):
        spec.meshdir = str((Path(model.source).parent / spec.meshdir).resolve())
    xml = _name_anonymous_defaults(spec.to_xml())
    with atomic_write(path) as f:
        f.write(xml)
    return Path(path)


def _name_anonymous_defaults(xml: str) -> str:
    """Give nested unnamed ``<default>`` classes a name.

    Specs attached with an empty prefix (MyoSuite's myo_sim models) keep an unnamed default
    class, which MuJoCo writes but will not read back; a unique name changes nothing else,
    since no element can refer to a class without a name.
    """
    import re

    out, depth, count, last = [], 0, 0, 0
    for tag in re.finditer(r"<(/?)default\b([^>]*?)(/?)>", xml):
        closing, attrs, self_closing = tag.group(1), tag.group(2), tag.group(3)
        if closing:
            depth -= 1
            continue
        if depth > 0 and "class=" not in attrs:
            out.append(xml[last : tag.start()])
            out.append(f'<default class="mjx_biomech_unnamed{count}"{attrs}{self_closing}>')
            last = tag.end()
            count += 1
        if not self_closing:
            depth += 1
    out.append(xml[last:])
    return "".join(out)


def scaled_mjx_model(model: "BiomechModel", params: BodyParams):
    """An ``mjx.Model`` whose geometry and mass properties are this person's (traceable in params).

    Derived constants MuJoCo computes at compile time (``body_subtreemass``, ``dof_invweight0``,
    ``actuator_length0``, ...) keep their unscaled values; use :meth:`BiomechModel.to_mujoco`
    where those matter.
    """
    from mujoco import mjx

    m0 = model.mj_model
    mx = mjx.put_model(m0)
    bscale = model.body_scales(params)
    parent = np.asarray(m0.body_parentid)
    det = jnp.prod(bscale, axis=-1)
    # Principal moments follow the second moment along each principal axis (exact for isotropic scales).
    iq = np.stack([quat_to_mat_np(q) for q in m0.body_iquat])
    s_principal = jnp.abs(jnp.einsum("bji,bj->bi", iq, bscale))
    c = 0.5 * jnp.sum(m0.body_inertia, axis=-1, keepdims=True) - m0.body_inertia
    c = det[:, None] * s_principal**2 * c
    inertia = jnp.sum(c, axis=-1, keepdims=True) - c
    geom_scale = bscale[np.asarray(m0.geom_bodyid)]
    size = jnp.asarray(m0.geom_size) * jnp.mean(geom_scale, axis=-1, keepdims=True)
    size = jnp.where((np.asarray(m0.geom_type) == int(mujoco.mjtGeom.mjGEOM_PLANE))[:, None], m0.geom_size, size)
    return mx.replace(
        body_pos=jnp.asarray(m0.body_pos) * bscale[parent],
        body_ipos=jnp.asarray(m0.body_ipos) * bscale,
        body_mass=jnp.asarray(m0.body_mass) * det,
        body_inertia=inertia,
        jnt_pos=jnp.asarray(m0.jnt_pos) * bscale[np.asarray(m0.jnt_bodyid)],
        geom_pos=jnp.asarray(m0.geom_pos) * geom_scale,
        geom_size=size,
        site_pos=jnp.asarray(m0.site_pos) * bscale[np.asarray(m0.site_bodyid)] + params.offsets,
    )


def scaled_compiled_model(model: "BiomechModel", params: BodyParams, total_mass: float | None = None) -> mujoco.MjModel:
    """The same person as :func:`scaled_spec`, by editing a copy of a compiled ``MjModel``.

    For models given as an ``MjModel`` (which keeps no ``MjSpec``, e.g. ``myo_sim.load(name)[0]``).
    Fields are scaled by the rules of :func:`scaled_spec`; then ``mj_setConst`` recomputes the
    constants MuJoCo derives from them. Mesh vertices are rescaled where all geoms using a mesh
    share one scale.
    """
    import copy

    model.check_params(params)
    m0 = model.mj_model
    m = copy.deepcopy(m0)
    s = np.asarray(model.body_scales(params), dtype=float)
    offsets = np.asarray(params.offsets, dtype=float)
    m.body_pos[:] = m0.body_pos * s[m0.body_parentid]
    m.jnt_pos[:] = m0.jnt_pos * s[m0.jnt_bodyid]
    m.site_pos[:] = m0.site_pos * s[m0.site_bodyid] + offsets
    m.site_size[:] = m0.site_size * np.mean(s[m0.site_bodyid], axis=1, keepdims=True)
    m.cam_pos[:] = m0.cam_pos * s[m0.cam_bodyid]
    m.light_pos[:] = m0.light_pos * s[m0.light_bodyid]
    m.geom_pos[:] = m0.geom_pos * s[m0.geom_bodyid]
    mesh_scales: dict[int, set] = {}
    for g in range(m0.ngeom):
        sg = s[m0.geom_bodyid[g]]
        axis_scales = _axis_scales(m0.geom_quat[g], sg)
        m.geom_size[g] = _geom_size(mujoco.mjtGeom(int(m0.geom_type[g])), m0.geom_size[g], axis_scales)
        m.geom_rbound[g] = m0.geom_rbound[g] * float(np.max(sg))
        m.geom_aabb[g] = m0.geom_aabb[g] * np.tile(axis_scales, 2)
        if m0.geom_type[g] == int(mujoco.mjtGeom.mjGEOM_MESH) and m0.geom_dataid[g] >= 0:
            mesh_scales.setdefault(int(m0.geom_dataid[g]), set()).add(tuple(axis_scales))
    for mesh, scales in mesh_scales.items():
        if len(scales) == 1:
            adr, num = m0.mesh_vertadr[mesh], m0.mesh_vertnum[mesh]
            m.mesh_vert[adr : adr + num] = m0.mesh_vert[adr : adr + num] * np.array(next(iter(scales)), dtype=np.float32)
    for b, (mass, moments, quat, ipos) in scaled_mass_properties(m0, s, total_mass).items():
        m.body_mass[b], m.body_inertia[b], m.body_iquat[b], m.body_ipos[b] = mass, moments, quat, ipos
    for e in range(m0.neq):
        m.eq_data[e] = scaled_equality_data(m0, e, m0.eq_data[e], s)
    mujoco.mj_setConst(m, mujoco.MjData(m))
    with np.errstate(divide="ignore", invalid="ignore"):
        t_ratio = np.where(m0.tendon_length0 > 0, m.tendon_length0 / m0.tendon_length0, 1.0)
        a_ratio = np.where(m0.actuator_length0 > 0, m.actuator_length0 / m0.actuator_length0, 1.0)
    limited = m0.tendon_range[:, 1] > m0.tendon_range[:, 0]
    m.tendon_range[limited] = m0.tendon_range[limited] * t_ratio[limited, None]
    springs = np.all(m0.tendon_lengthspring >= 0, axis=1)
    m.tendon_lengthspring[springs] = m0.tendon_lengthspring[springs] * t_ratio[springs, None]
    m.actuator_lengthrange[:] = m0.actuator_lengthrange * a_ratio[:, None]
    return m
