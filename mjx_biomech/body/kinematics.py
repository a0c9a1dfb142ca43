"""Forward kinematics of a MuJoCo kinematic tree in JAX, with per-body scaling.

The tree walk follows MuJoCo's ``mj_kinematics`` (body offset, then each joint of the body in
order: slides translate along the current frame's axis, hinges and balls rotate about their
anchor, free joints set the pose), specialised at trace time to the model's joint types so the
compiled program is a short chain of 3x3 products. The scaled ``body_pos``, ``jnt_pos`` and
``site_pos`` it walks come from the scaling rule (:func:`mjx_biomech.body.scaling.scaled_positions`).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from jax import Array

from mjx_biomech.body.rotations import axis_angle_to_mat, quat_to_mat
from mjx_biomech.body.scaling import joint_frame_children, scaled_positions


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


@jax.tree_util.register_dataclass
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


@dataclass(frozen=True)
class _Motion:
    """How each qpos entry moves the points of the bodies below its joint, in the world frame:
    ``dp/dqpos_c = ω_c × (p − x_c) + t_c``. Hinges have ``ω`` their world axis and ``x`` their
    world anchor; slides and free-joint positions a translation ``t``; the quaternion entries of
    ball and free joints the rotation rate ``ω`` of their derivative (``dR/dq_c Rᵀ`` is skew)."""

    omega: Array  # (nq, 3)
    x: Array  # (nq, 3)
    t: Array  # (nq, 3)


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
        self._frame_children = joint_frame_children(m)  # read once: the rule needs it at every walk
        # moves[b, a]: qpos entry a belongs to a joint of body b or of one of its ancestors.
        moves = np.zeros((m.nbody, m.nq), dtype=bool)
        for b in range(1, m.nbody):
            moves[b] = moves[m.body_parentid[b]]
            for j in range(m.body_jntadr[b], m.body_jntadr[b] + m.body_jntnum[b]):
                adr = m.jnt_qposadr[j]
                moves[b, adr : adr + _QPOS_SIZE[int(m.jnt_type[j])]] = True
        self._moves = moves

    def forward(self, qpos: Array, body_scale: Array, site_offsets: Array | None = None, sites=None) -> Kinematics:
        """Walk the tree.

        Args:
            qpos: (nq,) MuJoCo generalised positions.
            body_scale: (B, 3) per-body scale vectors in each body's frame (row 0, world, is 1).
            site_offsets: (S, 3) metres in the body frame, added after scaling; None for zeros.
            sites: optional index array selecting the sites to return (default: all).
        """
        kin, _ = self._walk(qpos, body_scale, site_offsets, sites, motion=False)
        return kin

    def site_jacobian(
        self, qpos: Array, body_scale: Array, site_offsets: Array | None = None, sites=None
    ) -> tuple[Kinematics, Array]:
        """:meth:`forward` and the derivative of the site positions with respect to qpos,
        (S, 3, nq), in closed form (joint axes and lever arms, as MuJoCo's ``mj_jac``; for ball and
        free joints, the derivative of the rotation with respect to the quaternion's entries)."""
        kin, motion = self._walk(qpos, body_scale, site_offsets, sites, motion=True)
        site_ids = np.arange(self.nsite) if sites is None else np.asarray(sites, dtype=int)
        mask = self._moves[self.site_body[site_ids]]  # (S, nq)
        w, t = motion.omega.T[None], motion.t.T[None]  # (1, 3, nq)
        lever = kin.site_xpos[:, :, None] - motion.x.T[None]  # (S, 3, nq)
        jac = jnp.stack([w[:, 1] * lever[:, 2] - w[:, 2] * lever[:, 1],
                         w[:, 2] * lever[:, 0] - w[:, 0] * lever[:, 2],
                         w[:, 0] * lever[:, 1] - w[:, 1] * lever[:, 0]], axis=1) + t
        return kin, jac * mask[:, None, :]

    def _walk(self, qpos, body_scale, site_offsets, sites, motion: bool):
        dtype = jnp.result_type(qpos.dtype, body_scale.dtype)
        scaled = scaled_positions(self.model, body_scale, site_offsets, jnp, names=("body_pos", "jnt_pos", "site_pos"),
                                  frame_children=self._frame_children)
        xpos = [jnp.zeros(3, dtype)] * self.nbody
        xmat = [jnp.eye(3, dtype=dtype)] * self.nbody
        nq = self.model.nq
        zero3 = jnp.zeros(3, dtype)
        Om, X, Tr = [zero3] * nq, [zero3] * nq, [zero3] * nq
        for body in self.bodies:
            pmat, ppos = xmat[body.parent], xpos[body.parent]
            pos = ppos + pmat @ scaled["body_pos"][body.index] if body.pos.any() else ppos
            mat = pmat if np.allclose(body.rot, np.eye(3), atol=0) else pmat @ body.rot
            for jnt in body.joints:
                a = jnt.qposadr
                q = qpos[a]
                if jnt.kind == mujoco.mjtJoint.mjJNT_FREE:
                    pos = qpos[a : a + 3]
                    quat = qpos[a + 3 : a + 7]
                    mat = quat_to_mat(quat)
                    if motion:
                        eye = jnp.eye(3, dtype=dtype)
                        for k in range(3):
                            Tr[a + k] = eye[k]
                        dR = jax.jacfwd(quat_to_mat)(quat)  # (3, 3, 4)
                        for k in range(4):
                            Om[a + 3 + k], X[a + 3 + k] = _vee(dR[:, :, k] @ mat.T), pos
                elif jnt.kind == mujoco.mjtJoint.mjJNT_SLIDE:
                    axis = mat @ jnt.axis
                    pos = pos + axis * (q - jnt.qpos0)
                    if motion:
                        Tr[a] = axis
                else:
                    if jnt.kind == mujoco.mjtJoint.mjJNT_HINGE:
                        rot = axis_angle_to_mat(jnt.axis, q - jnt.qpos0)
                    else:
                        rot = quat_to_mat(qpos[a : a + 4])
                    anchor = scaled["jnt_pos"][jnt.index] if jnt.anchor.any() else None
                    xanchor = pos if anchor is None else pos + mat @ anchor
                    if motion and jnt.kind == mujoco.mjtJoint.mjJNT_HINGE:
                        Om[a], X[a] = mat @ jnt.axis, xanchor
                    elif motion:
                        dR = jax.jacfwd(quat_to_mat)(qpos[a : a + 4])
                        for k in range(4):
                            Om[a + k], X[a + k] = mat @ _vee(dR[:, :, k] @ rot.T), xanchor
                    mat = mat @ rot
                    if anchor is not None:
                        pos = xanchor - mat @ anchor
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
        kin = Kinematics(xpos=xpos_a, xmat=xmat_a, site_xpos=site_xpos)
        if not motion:
            return kin, None
        return kin, _Motion(omega=jnp.stack(Om), x=jnp.stack(X), t=jnp.stack(Tr))


_QPOS_SIZE = {int(mujoco.mjtJoint.mjJNT_FREE): 7, int(mujoco.mjtJoint.mjJNT_BALL): 4,
              int(mujoco.mjtJoint.mjJNT_SLIDE): 1, int(mujoco.mjtJoint.mjJNT_HINGE): 1}


def _vee(skew: Array) -> Array:
    """(3,) the vector ``v`` of a skew-symmetric matrix, ``skew @ u = v × u``."""
    return jnp.stack([skew[2, 1], skew[0, 2], skew[1, 0]])
