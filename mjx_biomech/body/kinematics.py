"""Forward kinematics of a MuJoCo kinematic tree in JAX, with per-body scaling.

The tree walk follows MuJoCo's ``mj_kinematics`` (body offset, then each joint of the body in
order: slides translate along the current frame's axis, hinges and balls rotate about their
anchor, free joints set the pose), specialised at trace time to the model's joint types so the
compiled program is a short chain of 3x3 products. The scaled ``body_pos``, ``jnt_pos`` and
``site_pos`` it walks come from the scaling rule (:func:`mjx_biomech.body.scaling.scaled_positions`).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import mujoco
import numpy as np
from jax import Array

from mjx_biomech.body.rotations import axis_angle_to_mat, quat_to_mat
from mjx_biomech.body.scaling import scaled_positions


@dataclass(frozen=True)
class _Joint:
    index: int
    kind: int
    qposadr: int
    axis: np.ndarray
    anchor: np.ndarray
    qpos0: float


@dataclass(frozen=True)
class _Body:
    index: int
    parent: int
    pos: np.ndarray
    rot: np.ndarray
    joints: tuple[_Joint, ...]


@dataclass(frozen=True)
class Kinematics:
    """Poses of every body and site, world frame.

    Attributes:
        xpos: (B, 3) body frame origins, metres.
        xmat: (B, 3, 3) body frame rotations (columns are the body axes).
        site_xpos: (S, 3) site positions, metres.
    """

    xpos: Array
    xmat: Array
    site_xpos: Array


class KinematicTree:
    """The static description of an ``MjModel``'s tree that :meth:`forward` walks."""

    def __init__(self, m: mujoco.MjModel):
        self.nbody = m.nbody
        self.nsite = m.nsite
        bodies = []
        for b in range(1, m.nbody):
            joints = []
            for j in range(m.body_jntadr[b], m.body_jntadr[b] + m.body_jntnum[b]):
                adr = m.jnt_qposadr[j]
                joints.append(
                    _Joint(
                        index=int(j),
                        kind=int(m.jnt_type[j]),
                        qposadr=int(adr),
                        axis=np.array(m.jnt_axis[j], dtype=float),
                        anchor=np.array(m.jnt_pos[j], dtype=float),
                        qpos0=float(m.qpos0[adr]),
                    )
                )
            rot = np.zeros(9)
            mujoco.mju_quat2Mat(rot, m.body_quat[b])
            bodies.append(
                _Body(
                    index=b,
                    parent=int(m.body_parentid[b]),
                    pos=np.array(m.body_pos[b], dtype=float),
                    rot=rot.reshape(3, 3),
                    joints=tuple(joints),
                )
            )
        self.bodies = tuple(bodies)
        self.site_body = np.array(m.site_bodyid, dtype=int)
        self.model = m

    def forward(self, qpos: Array, body_scale: Array, site_offsets: Array | None = None, sites=None) -> Kinematics:
        """Walk the tree.

        Args:
            qpos: (nq,) MuJoCo generalised positions.
            body_scale: (B, 3) per-body scale vectors in each body's frame (row 0, world, is 1).
            site_offsets: (S, 3) metres in the body frame, added after scaling; None for zeros.
            sites: optional index array selecting the sites to return (default: all).
        """
        dtype = jnp.result_type(qpos.dtype, body_scale.dtype)
        scaled = scaled_positions(self.model, body_scale, site_offsets, jnp, names=("body_pos", "jnt_pos", "site_pos"))
        xpos = [jnp.zeros(3, dtype)] * self.nbody
        xmat = [jnp.eye(3, dtype=dtype)] * self.nbody
        for body in self.bodies:
            pmat, ppos = xmat[body.parent], xpos[body.parent]
            pos = ppos + pmat @ scaled["body_pos"][body.index] if body.pos.any() else ppos
            mat = pmat if np.allclose(body.rot, np.eye(3), atol=0) else pmat @ body.rot
            for jnt in body.joints:
                q = qpos[jnt.qposadr]
                if jnt.kind == mujoco.mjtJoint.mjJNT_FREE:
                    pos = qpos[jnt.qposadr : jnt.qposadr + 3]
                    mat = quat_to_mat(qpos[jnt.qposadr + 3 : jnt.qposadr + 7])
                elif jnt.kind == mujoco.mjtJoint.mjJNT_SLIDE:
                    pos = pos + mat @ (jnt.axis * (q - jnt.qpos0))
                else:
                    if jnt.kind == mujoco.mjtJoint.mjJNT_HINGE:
                        rot = axis_angle_to_mat(jnt.axis, q - jnt.qpos0)
                    else:
                        rot = quat_to_mat(qpos[jnt.qposadr : jnt.qposadr + 4])
                    if jnt.anchor.any():
                        anchor = scaled["jnt_pos"][jnt.index]
                        xanchor = pos + mat @ anchor
                        mat = mat @ rot
                        pos = xanchor - mat @ anchor
                    else:
                        mat = mat @ rot
            xpos[body.index] = pos
            xmat[body.index] = mat
        xpos_a = jnp.stack(xpos)
        xmat_a = jnp.stack(xmat)
        site_ids = np.arange(self.nsite) if sites is None else np.asarray(sites, dtype=int)
        # Sites are transformed body by body (no per-site gather of 3x3 matrices, whose
        # backward pass is a costly scatter), then put back in the requested order.
        # One gather puts each body's sites next to each other; the chunks are then slices.
        by_body = np.argsort(self.site_body[site_ids], kind="stable")
        local = scaled["site_pos"][site_ids[by_body]]
        bodies, starts = np.unique(self.site_body[site_ids[by_body]], return_index=True)
        ends = np.append(starts[1:], len(by_body))
        chunks = [xpos[b] + local[i:j] @ xmat[b].T for b, i, j in zip(bodies, starts, ends)]
        if chunks:
            site_xpos = jnp.concatenate(chunks)[np.argsort(by_body)]
        else:
            site_xpos = jnp.zeros((0, 3), dtype)
        return Kinematics(xpos=xpos_a, xmat=xmat_a, site_xpos=site_xpos)
