"""Forward kinematics of a MuJoCo kinematic tree in JAX, with per-body scaling.

The tree walk follows MuJoCo's ``mj_kinematics`` (body offset, then each joint of the body in
order: slides translate along the current frame's axis, hinges and balls rotate about their
anchor, free joints set the pose), specialised at trace time to the model's joint types so the
compiled program is a short chain of 3x3 products. The scaled ``body_pos``, ``jnt_pos`` and
``site_pos`` it walks come from the scaling rule (:func:`mjx_biomech.body.scaling.scaled_positions`).

Derivatives do not go through that chain: a custom JVP carries the inputs' tangents down the
tree as each body's twist (angular and linear velocity, world frame) from the joint axes and
anchors the walk recorded. JAX transposes that linear rule for reverse mode, which then sums
each body's subtree (as a recursive Newton–Euler pass does) instead of differentiating every
3x3 product. The tangent is written so that its transpose stays cheap on XLA: the inputs'
tangents are split once into pieces (indexing an array per joint would transpose into one padded
full-size array per joint, summed in a chain XLA recomputes inside every consumer), sites are
handled in runs of consecutive sites on one body (no per-site gather or scatter of twists or
rotations), and cross products with a tangent are products with a constant skew matrix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from jax import Array

from mjx_biomech.body.rotations import quat_to_mat
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
        hinges = [j for b in bodies for j in b.joints if j.kind == mujoco.mjtJoint.mjJNT_HINGE]
        self._hinge_index = {j.index: k for k, j in enumerate(hinges)}
        self._hinge_adr = np.array([j.qposadr for j in hinges], dtype=int)
        self._hinge_qpos0 = np.array([j.qpos0 for j in hinges])
        K = np.array([[[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]] for a in (j.axis for j in hinges)]).reshape(-1, 3, 3)
        KK = K @ K
        self._hinge_terms = (np.eye(3) + KK, -KK, K)  # R = (I + K²) − cos θ K² + sin θ K
        self._groups: dict = {}  # coordinate_jacobian's twist groups, per (qpos entry, coordinate) pairs
        # moves[b, a]: qpos entry a belongs to a joint of body b or of one of its ancestors.
        moves = np.zeros((m.nbody, m.nq), dtype=bool)
        for b in range(1, m.nbody):
            moves[b] = moves[m.body_parentid[b]]
            for j in range(m.body_jntadr[b], m.body_jntadr[b] + m.body_jntnum[b]):
                adr = m.jnt_qposadr[j]
                moves[b, adr : adr + _QPOS_SIZE[int(m.jnt_type[j])]] = True
        self._moves = moves
        # below[b2, b]: body b2 is b or one of its descendants.
        below = np.zeros((m.nbody, m.nbody), dtype=bool)
        for b in range(m.nbody):
            below[b, b] = True
            a = b
            while a != 0:
                a = m.body_parentid[a]
                below[b, a] = True
        self._below = below
        # above[a, b]: qpos entry a's joint is at or above b's (on an ancestor body of b's, or
        # the same joint or an earlier one of the same body).
        above = np.zeros((m.nq, m.nq), dtype=bool)
        for j in range(m.njnt):
            b, adr = m.jnt_bodyid[j], m.jnt_qposadr[j]
            for i in range(m.njnt):
                if moves[b, m.jnt_qposadr[i]] and (m.jnt_bodyid[i] != b or i <= j):
                    above[m.jnt_qposadr[i], adr] = True
        self._above = above
        # The body whose joint each qpos entry belongs to.
        self._qpos_body = np.zeros(m.nq, dtype=int)
        for j in range(m.njnt):
            adr = m.jnt_qposadr[j]
            self._qpos_body[adr : adr + _QPOS_SIZE[int(m.jnt_type[j])]] = m.jnt_bodyid[j]

    def __getstate__(self) -> dict:
        # The twist-group cache fills as programs are traced; a pickled tree (and the program
        # cache's key, mjx_biomech.program_cache) holds the tree only.
        return {k: v for k, v in self.__dict__.items() if k != "_groups"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._groups = {}

    def forward(self, qpos: Array, body_scale: Array, site_offsets: Array | None = None, sites=None) -> Kinematics:
        """Walk the tree.

        Args:
            qpos: (nq,) MuJoCo generalised positions.
            body_scale: (B, 3) per-body scale vectors in each body's frame (row 0, world, is 1).
            site_offsets: (S, 3) metres in the body frame, added after scaling; None for zeros.
            sites: optional index array selecting the sites to return (default: all).

        Derivatives (forward and reverse mode) come from a closed-form rule: the tangent of every
        input is carried down the tree as each body's twist (angular and linear velocity in the
        world frame), so differentiation never goes through the chain of rotation products.
        """
        scaled = self._scaled(body_scale, site_offsets)
        site_ids = np.arange(self.nsite) if sites is None else np.asarray(sites, dtype=int)

        @jax.custom_jvp
        def walk(qpos, body_pos, jnt_pos, site_pos):
            return self._walk(qpos, body_pos, jnt_pos, site_pos, site_ids)[0]

        @walk.defjvp
        def walk_jvp(primals, tangents):
            kin, record = self._walk(*primals, site_ids)
            return kin, self._twist_tangent(kin, record, site_ids, primals[3], *tangents)

        return walk(qpos, scaled["body_pos"], scaled["jnt_pos"], scaled["site_pos"])

    def coordinate_jacobian(
        self, qpos: Array, dqpos: Array, pairs: tuple[np.ndarray, np.ndarray], body_scale: Array,
        site_offsets: Array | None = None, sites=None,
    ) -> tuple[Kinematics, Array]:
        """:meth:`forward` and the derivative of the site positions with respect to coordinates,
        (S, 3, C), from ``dqpos`` (nq, C), the derivative of qpos with respect to them, whose
        nonzero entries are among ``pairs`` (qpos entries, coordinates), every coordinate present.

        In closed form, as MuJoCo's ``mj_jac``: qpos entry ``a`` moves a point ``p`` below its
        joint by ``ω_a × (p − x_a) + t_a`` (:class:`_Motion`). Chained with ``dqpos`` without an
        (S, 3, nq) intermediate: the entries a coordinate moves on one body add up to one twist
        (rotation rate ``Ω`` and the velocity ``V`` of the world origin carried with the body),
        so each site's column is the single product ``Ω × p + V``. A coordinate moving joints on
        several bodies has one twist per body, summed over the sites each one moves.
        """
        kin, _, omega, origin, site_ids = self._twists(qpos, dqpos, pairs, body_scale, site_offsets, sites)
        groups = self._twist_groups(pairs, dqpos.shape[1])
        mask = self._moves[self.site_body[site_ids]][:, np.argmax(groups.entries, axis=1)]  # (S, K)
        p = kin.site_xpos
        jac = jnp.stack([omega[None, :, 1] * p[:, 2:3] - omega[None, :, 2] * p[:, 1:2],
                         omega[None, :, 2] * p[:, 0:1] - omega[None, :, 0] * p[:, 2:3],
                         omega[None, :, 0] * p[:, 1:2] - omega[None, :, 1] * p[:, 0:1]], axis=1)
        jac = (jac + origin.T[None]) * mask[:, None, :]  # (S, 3, K)
        out = jac[:, :, groups.first]
        for c, k in groups.extra:
            out = out.at[:, :, c].add(jac[:, :, k])
        return kin, out

    @property
    def hinges_and_slides(self) -> bool:
        """Whether every joint is a hinge or a slide (no ball or free joint)."""
        return all(j.kind in (mujoco.mjtJoint.mjJNT_HINGE, mujoco.mjtJoint.mjJNT_SLIDE)
                   for body in self.bodies for j in body.joints)

    def _twists(self, qpos, dqpos, pairs, body_scale, site_offsets, sites):
        """The walk, each qpos entry's motion (:class:`_Motion`), each twist group's ``Ω`` and
        ``V`` (K, 3) (``V`` from each entry's origin velocity ``t − ω × x``), and the site ids."""
        scaled = self._scaled(body_scale, site_offsets)
        site_ids = np.arange(self.nsite) if sites is None else np.asarray(sites, dtype=int)
        kin, record = self._walk(qpos, scaled["body_pos"], scaled["jnt_pos"], scaled["site_pos"], site_ids)
        motion = record.motion(self.bodies, self.model.nq, kin.xpos.dtype)
        velocity = motion.t - jnp.cross(motion.omega, motion.x)  # (nq, 3)
        groups = self._twist_groups(pairs, dqpos.shape[1])
        weights = dqpos.T[groups.coordinate] * groups.entries  # (K, nq)
        return kin, motion, weights @ motion.omega, weights @ velocity, site_ids

    def normal_equations(
        self, qpos: Array, dqpos: Array, pairs: tuple[np.ndarray, np.ndarray], body_scale: Array,
        site_offsets: Array | None, sites, site_weights: Array, targets: Array,
    ):
        """The normal equations of ``½ Σ_s w_s |p_s − t_s|²`` in coordinates, without the Jacobian:
        the poses, gradient ``g`` (C,), Gauss–Newton matrix ``JᵀJ`` (C, C), and, in qpos, the
        gradient (nq,) and second-order term ``Σ_s ρ_s·∂²p_s/∂qpos²`` (nq, nq) with
        ``ρ_s = w_s (p_s − t_s)`` (:meth:`_curvature`); for trees of hinges and slides
        (:attr:`hinges_and_slides`), and the twist groups' ``(Ω, V)`` (for
        :meth:`twist_gradient`). ``site_weights`` (S,) (0 for a site not observed) and
        ``targets`` (S, 3) are over ``sites``; ``dqpos`` and ``pairs`` as :meth:`coordinate_jacobian`.

        A site's column for twist group ``k`` (its coordinate's motion on one body) is
        ``Ω_k × p + V_k``, so every sum over sites is a polynomial in ``p`` of degree two: with the
        moments of the weighted sites below each body (``Σ w``, ``Σ w p``, ``Σ w p pᵀ``, ``Σ ρ``,
        ``Σ p ρᵀ``) a pair of groups costs a few products, whatever the number of sites:
        ``(JᵀJ)_kl = (Ω_k·Ω_l) tr Q − Ω_kᵀ Q Ω_l + P·(V_l × Ω_k + V_k × Ω_l) + W V_k·V_l`` over the
        sites both move (those below the lower of the two bodies; none on separate branches), a
        product of (K, 6) matrices; and ``g_k = Ω_k·Σ p × ρ + V_k·Σ ρ``.
        """
        if not self.hinges_and_slides:
            raise ValueError("normal_equations: only trees of hinges and slides have them in closed form")
        kin, motion, omega, origin, site_ids = self._twists(qpos, dqpos, pairs, body_scale, site_offsets, sites)
        groups = self._twist_groups(pairs, dqpos.shape[1])
        p = kin.site_xpos
        w = site_weights
        rho = w[:, None] * (p - targets)
        S = p.shape[0]
        table = jnp.concatenate([w[:, None], w[:, None] * p, (w[:, None, None] * p[:, :, None] * p[:, None, :]).reshape(S, 9),
                                 rho, (p[:, :, None] * rho[:, None, :]).reshape(S, 9)], axis=1)  # (S, 25)
        inside = jnp.asarray(self._below[self.site_body[site_ids]], p.dtype)  # (S, nbody)
        moments = inside.T @ table  # (nbody, 25) over the sites below each body
        W, P, Q = moments[:, 0], moments[:, 1:4], moments[:, 4:13].reshape(-1, 3, 3)
        R, A = moments[:, 13:16], moments[:, 16:25].reshape(-1, 3, 3)
        body = groups.body
        # For group k at or above group l the sites both move are those below l's body, β, and
        # (JᵀJ)_kl = Ω_k·(tr Q_β Ω_l − Q_β Ω_l + P_β × V_l) + V_k·(Ω_l × P_β + W_β V_l).
        Qb, Pb = Q[body], P[body]
        a = jnp.trace(Qb, axis1=1, axis2=2)[:, None] * omega - jnp.einsum("kij,kj->ki", Qb, omega) + jnp.cross(Pb, origin)
        b = jnp.cross(omega, Pb) + W[body][:, None] * origin
        M = jnp.concatenate([omega, origin], axis=1) @ jnp.concatenate([a, b], axis=1).T  # (K, K)
        above, beside = self._group_order(body)
        JtJ = jnp.where(above, M, 0.0) + jnp.where(beside, M.T, 0.0)
        g = jnp.sum(omega * _cross_moment(A)[body], axis=1) + jnp.sum(origin * R[body], axis=1)
        g, JtJ = groups.to_coordinates(g), groups.to_coordinates(JtJ, matrix=True)
        qbody = self._qpos_body
        g_q, H_q = self._curvature(motion, R[qbody], A[qbody])
        return kin, g, JtJ, g_q, H_q, (omega, origin)

    def twist_gradient(self, twists, p, pairs, num_coordinates: int, sites, site_weights, targets) -> Array:
        """The gradient (C,) of ``½ Σ_s w_s |p_s − t_s|²`` at the pose of sites ``p`` (S, 3) and
        twists ``(Ω, V)`` that :meth:`normal_equations` returned there, for other weights and
        targets: ``g_k = Ω_k·Σ p × ρ + V_k·Σ ρ`` over the sites below group ``k``'s body, with
        ``ρ_s = w_s (p_s − t_s)``. No walk: a new frame's data at the last frame's solution."""
        omega, origin = twists
        groups = self._twist_groups(pairs, num_coordinates)
        site_ids = np.asarray(sites, dtype=int)
        rho = site_weights[:, None] * (p - targets)
        inside = jnp.asarray(self._below[self.site_body[site_ids]][:, groups.body], p.dtype)  # (S, K)
        R = inside.T @ rho
        X = inside.T @ jnp.cross(p, rho)
        return groups.to_coordinates(jnp.sum(omega * X, axis=1) + jnp.sum(origin * R, axis=1))

    def _group_order(self, body: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(K, K) bool for groups on bodies ``body`` (K,): ``above[k, l]``, l's body is k's or
        below it; ``beside[k, l]``, k's body is strictly below l's (the transposed pairs)."""
        key = ("order", body.tobytes())
        cached = self._groups.get(key)
        if cached is None:
            above = self._below[body[None, :], body[:, None]]
            cached = self._groups[key] = (above, above.T & ~above)
        return cached

    def _curvature(self, motion: _Motion, R, A) -> tuple[Array, Array]:
        """The gradient ``g`` (nq,) and second-order term ``H`` (nq, nq) of ``Σ_s ρ_s·p_s`` with
        ``ρ`` held fixed, in closed form for hinges and slides, from ``R_a = Σ ρ_s`` (nq, 3) and
        ``A_a = Σ p_s ρ_sᵀ`` (nq, 3, 3) over the sites each entry ``a`` moves.

        Moving entry ``a`` rotates everything below its joint about ``ω_a`` (a slide rotates
        nothing), so for ``a`` at or above ``b`` in the tree (``b``'s joint on a descendant of
        ``a``'s body, or later on the same body) ``∂J_sb/∂q_a = ω_a × J_sb`` and
        ``H_ab = ω_a · Y_b``, ``Y_b = Σ_s J_sb × ρ_s`` over the sites ``b`` moves, which with
        ``J_sb = ω_b × (p_s − x_b) + t_b`` needs only ``R_b`` and ``A_b``.
        """
        w, x, t = motion.omega, motion.x, motion.t
        cross = _cross_moment(A)
        g = jnp.sum(w * (cross - jnp.cross(x, R)), axis=1) + jnp.sum(t * R, axis=1)
        dot = jnp.trace(A, axis1=1, axis2=2) - jnp.sum(x * R, axis=1)
        Y = (jnp.einsum("bij,bj->bi", A, w) - x * jnp.sum(R * w, axis=1, keepdims=True)
             - w * dot[:, None] + jnp.cross(t, R))
        upper = jnp.asarray(self._above, R.dtype) * (w @ Y.T)  # H_ab for a at or above b
        return g, upper + upper.T - jnp.diag(jnp.diagonal(upper))

    def _twist_groups(self, pairs, num_coordinates: int) -> _TwistGroups:
        """The (qpos entry, coordinate) pairs grouped by coordinate and body (:class:`_TwistGroups`)."""
        adr, col = (np.asarray(a, dtype=int) for a in pairs)
        key = (adr.tobytes(), col.tobytes(), num_coordinates)
        cached = self._groups.get(key)
        if cached is None:
            groups = sorted({(int(c), int(self._qpos_body[a])) for a, c in zip(adr, col)})
            index = {g: k for k, g in enumerate(groups)}
            entries = np.zeros((len(groups), self.model.nq))
            for a, c in zip(adr, col):
                entries[index[(int(c), int(self._qpos_body[a]))], a] = 1.0
            coordinate = np.array([c for c, _ in groups], dtype=int)
            first = np.array([int(np.flatnonzero(coordinate == c)[0]) for c in range(num_coordinates)], dtype=int)
            extra = [(int(c), k) for k, c in enumerate(coordinate) if k != first[c]]
            body = self._qpos_body[np.argmax(entries, axis=1)]
            cached = self._groups[key] = _TwistGroups(coordinate, entries, first, extra, body, num_coordinates)
        return cached

    def _scaled(self, body_scale, site_offsets) -> dict:
        return scaled_positions(self.model, body_scale, site_offsets, jnp, names=("body_pos", "jnt_pos", "site_pos"),
                                frame_children=self._frame_children)

    def _hinge_rotations(self, qpos) -> Array | None:
        """(H, 3, 3) every hinge's rotation, at once: ``R = I + sin θ K + (1 − cos θ) K²`` with each
        axis' constant ``K``, written as three constant matrices weighted by 1, cos θ and sin θ
        (one short program for all hinges instead of one small one per hinge)."""
        if not len(self._hinge_adr):
            return None
        dtype = qpos.dtype
        # The hinges' qpos entries by slices of consecutive runs (a gather is slow on XLA:CPU).
        adr = self._hinge_adr
        cuts = np.flatnonzero(np.diff(adr) != 1) + 1
        runs = [(int(r[0]), int(r[-1]) + 1) for r in np.split(adr, cuts)]
        q = jnp.concatenate([qpos[a:b] for a, b in runs]) if len(runs) > 1 else qpos[runs[0][0]:runs[0][1]]
        angle = q - jnp.asarray(self._hinge_qpos0, dtype)
        c, s = jnp.cos(angle)[:, None, None], jnp.sin(angle)[:, None, None]
        one, cos, sin = (jnp.asarray(x, dtype) for x in self._hinge_terms)
        return one + c * cos + s * sin

    def _walk(self, qpos, body_pos, jnt_pos, site_pos, site_ids: np.ndarray) -> tuple[Kinematics, _Record]:
        """The poses, and what the derivatives need: each joint's world axes (rotation rates per
        qpos entry) and anchor, the frame before and after it, and each body's parent frame."""
        dtype = jnp.result_type(qpos.dtype, body_pos.dtype)
        xpos = [jnp.zeros(3, dtype)] * self.nbody
        xmat = [jnp.eye(3, dtype=dtype)] * self.nbody
        record = _Record()
        rotations = self._hinge_rotations(qpos)
        for body in self.bodies:
            pmat, ppos = xmat[body.parent], xpos[body.parent]
            record.parent_mat[body.index] = pmat
            pos = ppos + pmat @ body_pos[body.index] if body.pos.any() else ppos
            mat = pmat if np.allclose(body.rot, np.eye(3), atol=0) else pmat @ body.rot
            for jnt in body.joints:
                a = jnt.qposadr
                q = qpos[a]
                if jnt.kind == mujoco.mjtJoint.mjJNT_FREE:
                    pos = qpos[a : a + 3]
                    quat = qpos[a + 3 : a + 7]
                    mat = quat_to_mat(quat)
                    dR = jax.jacfwd(quat_to_mat)(jax.lax.stop_gradient(quat))  # (3, 3, 4)
                    record.joints[jnt.index] = _JointRecord(
                        axes=[_vee(dR[:, :, k] @ mat.T) for k in range(4)], anchor=pos)
                elif jnt.kind == mujoco.mjtJoint.mjJNT_SLIDE:
                    axis = mat @ jnt.axis
                    pos = pos + axis * (q - jnt.qpos0)
                    record.joints[jnt.index] = _JointRecord(axes=[axis])
                else:
                    if jnt.kind == mujoco.mjtJoint.mjJNT_HINGE:
                        rot = rotations[self._hinge_index[jnt.index]]
                        axes = [mat @ jnt.axis]
                    else:
                        quat = qpos[a : a + 4]
                        rot = quat_to_mat(quat)
                        dR = jax.jacfwd(quat_to_mat)(jax.lax.stop_gradient(quat))
                        axes = [mat @ _vee(dR[:, :, k] @ rot.T) for k in range(4)]
                    anchor = jnt_pos[jnt.index] if jnt.anchor.any() else None
                    xanchor = pos if anchor is None else pos + mat @ anchor
                    before = mat
                    mat = mat @ rot
                    if anchor is not None:
                        pos = xanchor - mat @ anchor
                    record.joints[jnt.index] = _JointRecord(axes=axes, anchor=xanchor, before=before, after=mat)
            xpos[body.index] = pos
            xmat[body.index] = mat
        xpos_a = jnp.stack(xpos)
        xmat_a = jnp.stack(xmat)
        # Sites are transformed run by run (consecutive requested sites on one body), so neither
        # the poses nor their derivatives gather a 3x3 matrix per site, nor reorder the sites.
        runs = self._site_runs(site_ids)
        chunks = [xpos[b] + local @ xmat[b].T for (b, _, _), local in zip(runs, _site_chunks(runs, site_ids, site_pos))]
        site_xpos = jnp.concatenate(chunks) if chunks else jnp.zeros((0, 3), dtype)
        return Kinematics(xpos=xpos_a, xmat=xmat_a, site_xpos=site_xpos), record

    def _site_runs(self, site_ids: np.ndarray) -> tuple:
        """The requested sites as runs of consecutive ones on one body: (body, first, end)."""
        body = self.site_body[site_ids]
        cuts = np.flatnonzero(np.diff(body) != 0) + 1
        return tuple((int(body[i]), int(i), int(j)) for i, j in zip(np.r_[0, cuts], np.r_[cuts, len(body)]) if j > i)

    def _twist_tangent(self, kin: Kinematics, record: _Record, site_ids, site_pos, dq, dbody_pos, djnt_pos, dsite_pos):
        """The tangent of :meth:`_walk`'s poses, linear in the inputs' tangents: each body's twist
        ``(ω, v)`` (a point ``p`` fixed to the body moves by ``v + ω × p``), built from its parent's,
        its offset's tangent, each joint's rate about its world axis through its anchor (or along
        it, for slides) and its anchor's tangent."""
        dtype = kin.xpos.dtype
        zero = jnp.zeros(3, dtype)
        w, v = [zero] * self.nbody, [zero] * self.nbody
        # The inputs' tangents split into one piece per entry: the reverse pass then joins the
        # pieces' cotangents once (indexing would pad each one to the full array and add them up).
        dq = [x.reshape(()) for x in jnp.split(dq, len(dq))]
        dbody_pos = [x.reshape(3) for x in jnp.split(dbody_pos, len(dbody_pos))]
        djnt_pos = [x.reshape(3) for x in jnp.split(djnt_pos, len(djnt_pos))] if len(djnt_pos) else []
        for body in self.bodies:
            wb, vb = w[body.parent], v[body.parent]
            if body.pos.any():
                vb = vb + record.parent_mat[body.index] @ dbody_pos[body.index]
            for jnt in body.joints:
                a, r = jnt.qposadr, record.joints[jnt.index]
                if jnt.kind == mujoco.mjtJoint.mjJNT_FREE:
                    wb = sum(r.axes[k] * dq[a + 3 + k] for k in range(4))
                    vb = jnp.stack(dq[a : a + 3]) - _cross_into(wb, r.anchor)
                elif jnt.kind == mujoco.mjtJoint.mjJNT_SLIDE:
                    vb = vb + r.axes[0] * dq[a]
                else:
                    wj = sum(axis * dq[a + k] for k, axis in enumerate(r.axes))
                    wb = wb + wj
                    vb = vb - _cross_into(wj, r.anchor)
                    if jnt.anchor.any():
                        vb = vb + (r.before - r.after) @ djnt_pos[jnt.index]
            w[body.index], v[body.index] = wb, vb
        W, V = jnp.stack(w), jnp.stack(v)
        dxpos = V + _cross_into(W, kin.xpos)
        dxmat = jnp.swapaxes(_cross_into(W[:, None, :], jnp.swapaxes(kin.xmat, 1, 2)), 1, 2)  # ω × each column
        runs = self._site_runs(site_ids)
        chunks = [v[b] + _cross_into(w[b], kin.site_xpos[i:j]) + dlocal @ kin.xmat[b].T
                  for (b, i, j), dlocal in zip(runs, _site_chunks(runs, site_ids, dsite_pos))]
        dsite = jnp.concatenate(chunks) if chunks else jnp.zeros((0, 3), dtype)
        return Kinematics(xpos=dxpos, xmat=dxmat, site_xpos=dsite)


class _TwistGroups(NamedTuple):
    """A coordinate's qpos entries on one body make one twist group; K groups: each group's
    ``coordinate`` (K,), its qpos ``entries`` (K, nq) 0/1 and ``body`` (K,), each coordinate's
    ``first`` group (C,), the (coordinate, group) of the ``extra`` ones."""

    coordinate: np.ndarray
    entries: np.ndarray
    first: np.ndarray
    extra: list
    body: np.ndarray
    num_coordinates: int

    def to_coordinates(self, a: Array, matrix: bool = False) -> Array:
        """Per-group values (K,), or a (K, K) matrix, summed into the coordinates (C,), (C, C)."""
        if self.extra:
            E = np.zeros((len(self.coordinate), self.num_coordinates))
            E[np.arange(len(self.coordinate)), self.coordinate] = 1.0
            return E.T @ a @ E if matrix else a @ E
        return a[self.first][:, self.first] if matrix else a[self.first]


def _site_chunks(runs, site_ids: np.ndarray, site_pos: Array) -> list:
    """Each run's rows of ``site_pos``: one gather (a slice where the
    requested sites are consecutive in the table) split into the runs, so the reverse pass
    joins the runs' cotangents once instead of padding and adding one per run."""
    if not runs:
        return []
    contiguous = np.array_equal(site_ids, np.arange(site_ids[0], site_ids[0] + len(site_ids)))
    local = site_pos[int(site_ids[0]) : int(site_ids[0]) + len(site_ids)] if contiguous else site_pos[site_ids]
    return jnp.split(local, [j for _, _, j in runs[:-1]])


def _cross_into(t: Array, x: Array) -> Array:
    """``t × x`` written as a product with the constant matrix ``[x]×ᵀ``, elementwise: linear in
    the tangent ``t`` with a transpose free of the component slices ``jnp.cross`` pads back."""
    x0, x1, x2 = x[..., 0], x[..., 1], x[..., 2]
    zero = jnp.zeros_like(x0)
    M = jnp.stack([jnp.stack([zero, x2, -x1], -1), jnp.stack([-x2, zero, x0], -1),
                   jnp.stack([x1, -x0, zero], -1)], -2)  # (t × x)_i = Σ_j M_ij t_j
    return jnp.sum(M * t[..., None, :], axis=-1)


def _cross_moment(A: Array) -> Array:
    """(..., 3) ``Σ p × ρ`` from moments ``A = Σ p ρᵀ`` (..., 3, 3): the vector of ``Aᵀ − A``."""
    return _vee(jnp.swapaxes(A, -1, -2) - A)


class _JointRecord(NamedTuple):
    """One joint in the walk: its world axes (one per qpos entry: a hinge's or slide's axis, the
    rotation rates of a ball's or free joint's quaternion entries), world anchor, and the body
    frame's rotation before and after it."""

    axes: list
    anchor: Array | None = None
    before: Array | None = None
    after: Array | None = None


class _Record:
    """What the walk leaves for the derivatives: joint records and each body's parent frame."""

    def __init__(self):
        self.joints: dict[int, _JointRecord] = {}
        self.parent_mat: dict[int, Array] = {}

    def motion(self, bodies, nq: int, dtype) -> _Motion:
        """The per-qpos-entry rotation rate, anchor and translation rate (:class:`_Motion`)."""
        zero = jnp.zeros(3, dtype)
        omega, x, t = [zero] * nq, [zero] * nq, [zero] * nq
        for body in bodies:
            for jnt in body.joints:
                a, r = jnt.qposadr, self.joints[jnt.index]
                if jnt.kind == mujoco.mjtJoint.mjJNT_FREE:
                    eye = jnp.eye(3, dtype=dtype)
                    for k in range(3):
                        t[a + k] = eye[k]
                    for k in range(4):
                        omega[a + 3 + k], x[a + 3 + k] = r.axes[k], r.anchor
                elif jnt.kind == mujoco.mjtJoint.mjJNT_SLIDE:
                    t[a] = r.axes[0]
                else:
                    for k, axis in enumerate(r.axes):
                        omega[a + k], x[a + k] = axis, r.anchor
        return _Motion(omega=jnp.stack(omega), x=jnp.stack(x), t=jnp.stack(t))


_QPOS_SIZE = {int(mujoco.mjtJoint.mjJNT_FREE): 7, int(mujoco.mjtJoint.mjJNT_BALL): 4,
              int(mujoco.mjtJoint.mjJNT_SLIDE): 1, int(mujoco.mjtJoint.mjJNT_HINGE): 1}


def _vee(skew: Array) -> Array:
    """(..., 3) the vector ``v`` of skew-symmetric matrices (..., 3, 3), ``skew @ u = v × u``."""
    return jnp.stack([skew[..., 2, 1], skew[..., 0, 2], skew[..., 1, 0]], axis=-1)
