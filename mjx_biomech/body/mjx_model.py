"""The person as an ``mjx.Model``: the values of :func:`~mjx_biomech.body.scaling.scaled_fields`
on traced parameters, and the constants ``mj_setConst`` derives at ``qpos0`` that MJX reads,
recomputed in JAX, so a batch of simulations can each carry its own body in one compiled step."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from mjx_biomech.body.params import BodyParams
from mjx_biomech.body.scaling import scaled_fields, scaled_length_ranges

if TYPE_CHECKING:
    from mjx_biomech.body.model import BiomechModel


def scaled_mjx_model(model: BiomechModel, params: BodyParams):
    """An ``mjx.Model`` of this person (traceable in ``params``) whose dynamics are MuJoCo's on
    :meth:`BiomechModel.to_mujoco`: the fields of :func:`scaled_fields`, then the constants
    MuJoCo derives at ``qpos0`` (:func:`_derived_constants`). The first call for a model
    compiles (seconds, mostly MJX's kinematics at ``qpos0``); later calls reuse it.

    Not rescaled, because MJX holds them as static NumPy arrays: ``site_size`` (drawing only),
    mesh vertices and convex hulls, and which tendon side sites lie inside their wrapping geom
    (decided on the unscaled model; an offset that moves a side site across its geom's surface
    changes the wrapping in MuJoCo C but not here).
    """
    from mujoco import mjx

    m0 = model.mj_model
    return _scale_mjx(m0, mjx.put_model(m0), model.body_scales(params), jnp.asarray(params.offsets))


@functools.partial(jax.jit, static_argnums=0)
def _scale_mjx(m0: mujoco.MjModel, mx, bscale, offsets):
    def replace(mx, fields):
        traced = {k: v for k, v in fields.items() if not isinstance(getattr(mx, k), np.ndarray)}
        return mx.replace(**{k: jnp.asarray(v, getattr(mx, k).dtype) for k, v in traced.items()})

    mx = replace(mx, scaled_fields(m0, bscale, offsets, jnp))
    return replace(mx, _derived_constants(m0, mx))


def _derived_constants(m0: mujoco.MjModel, mx) -> dict:
    """What ``mj_setConst`` computes from the scaled fields, in JAX (MuJoCo's ``set0`` and
    ``setFixed``): subtree masses; at ``qpos0`` the inverse weights of bodies, dofs and tendons
    (constraint regularisation), actuator ``acc0``, tendon reference lengths and the length
    ranges that follow the tendons' and actuators', connect anchors in the second body, camera
    and light offsets. Not recomputed: ``dof_M0`` and ``stat`` (MJX does not read them)."""
    from mujoco import mjx

    nbody, nv = m0.nbody, m0.nv
    parent = np.asarray(m0.body_parentid)
    subtree = np.eye(nbody)
    for b in range(nbody - 1, 0, -1):
        subtree[parent[b]] += subtree[b]
    out = {"body_subtreemass": subtree @ mx.body_mass}

    d = mjx.make_data(mx)
    d = mjx.kinematics(mx, d)
    d = mjx.com_pos(mx, d)
    d = mjx.tendon(mx, d)
    d = mjx.crb(mx, d)
    d = mjx.tendon_armature(mx, d)
    d = mjx.transmission(mx, d)
    chol = jax.scipy.linalg.cho_factor(mjx.full_m(mx, d))

    def inv_m(x):
        return jax.scipy.linalg.cho_solve(chol, x)

    # Bodies: mean diagonal of the translational and rotational blocks of J M^-1 J^T at the com,
    # with J of every body at once (mjx.jac's formula; a dof moves the bodies below it).
    below = subtree[np.asarray(m0.dof_bodyid)].T > 0
    offset = d.xipos - d.subtree_com[np.asarray(m0.body_rootid)]
    cdof = d.cdof
    jacp = cdof[None, :, 3:] + jnp.cross(cdof[None, :, :3], offset[:, None, :])
    jac = jnp.concatenate([jacp, jnp.broadcast_to(cdof[None, :, :3], jacp.shape)], axis=2) * below[:, :, None]
    flat = jnp.moveaxis(jac, 1, 0).reshape(nv, -1)
    a_diag = jnp.sum(flat * inv_m(flat), axis=0).reshape(nbody, 6)
    invweight = jnp.stack([a_diag[:, :3].mean(axis=1), a_diag[:, 3:].mean(axis=1)], axis=1)
    mass = mx.body_mass
    simple = (np.asarray(m0.body_simple) == 2)[:, None]
    translational_only = jnp.stack([1 / jnp.maximum(mujoco.mjMINVAL, mass), jnp.zeros_like(mass)], axis=1)
    invweight = jnp.where(simple, translational_only, invweight)
    out["body_invweight0"] = jnp.where((np.asarray(m0.body_weldid) == 0)[:, None], 0.0, invweight)

    # Dofs: a free joint's translational and rotational dofs, a ball's three, share their mean.
    average = np.zeros((nv, nv))
    for j in range(m0.njnt):
        adr, kind = m0.jnt_dofadr[j], m0.jnt_type[j]
        groups = {int(mujoco.mjtJoint.mjJNT_FREE): (3, 3), int(mujoco.mjtJoint.mjJNT_BALL): (3,)}.get(int(kind), (1,))
        for size in groups:
            average[adr : adr + size, adr : adr + size] = 1.0 / size
            adr += size
    dof_invweight = average @ jnp.diagonal(inv_m(jnp.eye(nv, dtype=mass.dtype)))
    dof_simple = np.asarray(m0.body_simple)[np.asarray(m0.dof_bodyid)] == 2
    out["dof_invweight0"] = jnp.where(dof_simple, 1 / jnp.maximum(mujoco.mjMINVAL, mass[np.asarray(m0.dof_bodyid)]), dof_invweight)

    if m0.ntendon:
        ten_j = d._impl.ten_J
        out["tendon_invweight0"] = jnp.sum(ten_j * inv_m(ten_j.T).T, axis=1)
    if m0.nu:
        moment = d._impl.actuator_moment
        out["actuator_acc0"] = jnp.linalg.norm(inv_m(moment.T), axis=0)
    out.update(scaled_length_ranges(m0, d.ten_length, d.actuator_length, jnp))
    out["tendon_length0"] = d.ten_length

    # Connect constraints between bodies: the anchor in the second body, where the first body's
    # anchor sits at qpos0.
    connect = np.flatnonzero((np.asarray(m0.eq_type) == int(mujoco.mjtEq.mjEQ_CONNECT))
                             & (np.asarray(m0.eq_objtype) == int(mujoco.mjtObj.mjOBJ_BODY)))
    if len(connect):
        b1, b2 = np.asarray(m0.eq_obj1id)[connect], np.asarray(m0.eq_obj2id)[connect]
        data = mx.eq_data[connect]
        world = d.xpos[b1] + jnp.einsum("nij,nj->ni", d.xmat[b1], data[:, :3])
        anchor2 = jnp.einsum("nji,nj->ni", d.xmat[b2], world - d.xpos[b2])
        out["eq_data"] = mx.eq_data.at[connect, 3:6].set(anchor2)

    # Cameras and lights: offsets from their body and from the (target) subtree's centre of mass.
    for kind, n in (("cam", m0.ncam), ("light", m0.nlight)):
        if n:
            body = np.asarray(getattr(m0, f"{kind}_bodyid"))
            target = np.asarray(getattr(m0, f"{kind}_targetbodyid"))
            offset = jnp.einsum("nij,nj->ni", d.xmat[body], getattr(mx, f"{kind}_pos"))
            out[f"{kind}_pos0"] = offset
            out[f"{kind}_poscom0"] = d.xpos[body] + offset - d.subtree_com[np.where(target >= 0, target, body)]
    return out
