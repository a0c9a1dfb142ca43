"""Dynamic scaling in MJX (``model.mjx_model(params)``) against MuJoCo's C engine on the
statically scaled model (``model.to_mujoco(params)``), in the style of MJX's own tests: the C
engine is the oracle and each test names the quantity it compares. float64 (tests/conftest.py).

The bundled model is scaled with left/right groups tied and the pelvis and thighs per axis;
each person has random scales in [0.8, 1.2] and site offsets up to 3 cm. A small model with an
oblique principal inertia frame, a slanted capsule and a rotated ``<frame>`` exercises the
parts of the rule the bundled model does not reach.
"""

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest
from mujoco import mjx

import mjx_biomech as mb
from mjx_biomech.body import scaling

_TOL = 1e-8


def random_person(model, seed):
    rng = np.random.default_rng(seed)
    offsets = rng.normal(size=(len(model.site_names), 3))
    offsets *= 0.03 * rng.uniform(0, 1, (len(offsets), 1)) / np.linalg.norm(offsets, axis=1, keepdims=True)
    return mb.BodyParams(jnp.asarray(rng.uniform(0.8, 1.2, len(model.scale_param_names))), jnp.asarray(offsets))


@pytest.fixture(scope="module")
def model():
    return mb.load_model().with_scale_groups(tie_left_right=True, per_axis=("pelvis", "thigh"))


@pytest.fixture(scope="module")
def mjx_step(model):
    """(scales, offsets, qpos, qvel) -> (mjx model, Data after one mjx.step), compiled once."""

    @jax.jit
    def step(scales, offsets, qpos, qvel):
        mx = model.mjx_model(mb.BodyParams(scales, offsets))
        return mx, mjx.step(mx, mjx.make_data(mx).replace(qpos=qpos, qvel=qvel))

    return step


@pytest.fixture(scope="module", params=[0, 1])
def case(request, model, mjx_step):
    """One person standing on the floor: MuJoCo C before and after ``mj_step``, and MJX's step.

    The state comes from letting the statically scaled model fall onto its feet from the
    neutral pose; velocities are scaled down as in MJX's forward_test (MJX leaves out some
    velocity-dependent terms of the C engine).
    """
    params = random_person(model, request.param)
    m = model.to_mujoco(params)
    d = mujoco.MjData(m)
    d.qpos[:] = np.asarray(model.coords_to_qpos(model.neutral_coordinates(), params))
    for _ in range(150):
        mujoco.mj_step(m, d)
    d.qvel[:] *= 1e-2
    mujoco.mj_forward(m, d)
    before = copy_data(m, d)
    # Copies: on CPU jnp.asarray may share d's memory, which mj_step then overwrites.
    mx, dx = jax.block_until_ready(mjx_step(params.scales, params.offsets, jnp.array(d.qpos), jnp.array(d.qvel)))
    mujoco.mj_step(m, d)
    return {"m": m, "before": before, "after": d, "mx": mx, "dx": dx}


def copy_data(m, d):
    out = mujoco.MjData(m)
    out.qpos[:], out.qvel[:] = d.qpos, d.qvel
    mujoco.mj_forward(m, out)
    return out


def assert_close(ours, oracle, name, tol=_TOL):
    ours, oracle = np.asarray(ours), np.asarray(oracle)
    err = float(np.abs(ours - oracle).max()) if oracle.size else 0.0
    assert err <= tol, f"{name}: max |MJX - MuJoCo C| = {err:.3g} > {tol:g}"


# mjx.step leaves the position-dependent quantities of the state it started from in Data (as
# mj_step does), so one compiled step answers every comparison below.
def test_body_xpos_matches_mujoco_c(case):
    assert_close(case["dx"].xpos, case["before"].xpos, "xpos")
    assert_close(case["dx"].xmat, case["before"].xmat.reshape(-1, 3, 3), "xmat")


def test_site_xpos_matches_mujoco_c(case):
    assert_close(case["dx"].site_xpos, case["before"].site_xpos, "site_xpos")


def test_subtree_com_matches_mujoco_c(case):
    assert_close(case["dx"].subtree_com, case["before"].subtree_com, "subtree_com")


def test_cinert_matches_mujoco_c(case):
    assert_close(case["dx"]._impl.cinert, case["before"].cinert, "cinert")


def test_mass_matrix_matches_mujoco_c(case):
    m, d = case["m"], case["before"]
    full = np.zeros((m.nv, m.nv))
    mujoco.mj_fullM(m, d, full)
    assert_close(mjx.full_m(case["mx"], case["dx"]), full, "M")


def test_step_with_foot_contacts_matches_mujoco_c(case):
    assert case["before"].ncon > 0, "the feet should touch the floor"
    assert_close(case["dx"].qacc, case["before"].qacc, "qacc")
    assert_close(case["dx"].qpos, case["after"].qpos, "qpos")
    assert_close(case["dx"].qvel, case["after"].qvel, "qvel")


@pytest.mark.parametrize(
    "field",
    ["body_mass", "body_ipos", "body_subtreemass", "body_invweight0", "dof_invweight0", "actuator_acc0",
     "geom_size", "geom_quat", "geom_rbound", "geom_aabb", "geom_pos", "jnt_pos", "body_pos", "site_pos"],
)
def test_model_field_matches_mujoco_compiler(case, field):
    scale = max(1.0, float(np.abs(getattr(case["m"], field)).max()))
    assert_close(getattr(case["mx"], field), getattr(case["m"], field), field, tol=_TOL * scale)


def test_inertia_matrix_matches_mujoco_compiler(case):
    mx, m = case["mx"], case["m"]
    ours = scaling.full_inertia(np.asarray(mx.body_inertia), np.asarray(mx.body_iquat))
    assert_close(ours, scaling.full_inertia(m.body_inertia, m.body_iquat), "body inertia matrix")


def test_compiled_mjmodel_scales_like_the_spec_field_by_field(model):
    """``scaled_compiled_model`` (MjModel in, ``mj_setConst``) against the MjSpec path, bundled model."""
    from_model = mb.load_model(model.mj_model).with_scale_groups(tie_left_right=True, per_axis=("pelvis", "thigh"))
    assert from_model.spec is None
    params = random_person(model, 2)
    via_spec, via_fields = model.to_mujoco(params), from_model.to_mujoco(params)
    fields = scaling.scaled_fields(model.mj_model, np.asarray(model.body_scales(params)), np.asarray(params.offsets))
    derived = ("body_subtreemass", "body_invweight0", "dof_invweight0", "actuator_acc0", "stat.meaninertia", "stat.meanmass")
    for name in (*(f for f in fields if f not in ("body_inertia", "body_iquat")), *derived):
        ours, theirs = via_fields, via_spec
        for part in name.split("."):
            ours, theirs = getattr(ours, part), getattr(theirs, part)
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12, err_msg=name)
    np.testing.assert_allclose(scaling.full_inertia(via_fields.body_inertia, via_fields.body_iquat),
                               scaling.full_inertia(via_spec.body_inertia, via_spec.body_iquat), atol=1e-14)


# ----------------------------------------------------------------------------- oblique frames
_OBLIQUE = """
<mujoco>
  <compiler angle="degree"/>
  <worldbody>
    <geom type="plane" size="0 0 1"/>
    <body name="a" pos="0 0 1">
      <freejoint/>
      <geom type="box" size=".1 .2 .05" mass="2"/>
      <frame euler="20 30 40" pos=".1 .05 0">
        <body name="b" pos=".2 .1 -.3" euler="10 0 0">
          <joint type="hinge" axis="0 1 0" pos=".01 .02 .03"/>
          <geom type="capsule" fromto="0 0 0 .1 .05 -.3" size=".03"/>
          <inertial pos=".05 .02 -.15" mass="1.5" fullinertia=".03 .02 .015 .004 .003 .002"/>
          <site name="s" pos=".02 .03 -.1"/>
        </body>
      </frame>
    </body>
  </worldbody>
</mujoco>
"""


@pytest.fixture(scope="module")
def oblique(tmp_path_factory):
    path = tmp_path_factory.mktemp("oblique") / "oblique.xml"
    path.write_text(_OBLIQUE)
    return mb.load_model(path).with_scale_groups(per_axis=("a", "b"))


@pytest.fixture(scope="module")
def oblique_com_pos(oblique):
    """(scales, qpos) -> (mjx model, Data after kinematics and com_pos), compiled once."""

    @jax.jit
    def run(scales, qpos):
        mx = oblique.mjx_model(oblique.default_params().replace(scales=scales))
        d = mjx.make_data(mx).replace(qpos=qpos)
        return mx, mjx.com_pos(mx, mjx.kinematics(mx, d))

    return run


def test_oblique_principal_frame_and_slanted_capsule_match_mujoco_c(oblique, oblique_com_pos):
    params = random_person(oblique, 3)
    m = oblique.to_mujoco(params)
    d = mujoco.MjData(m)
    d.qpos[:] = m.qpos0
    d.qpos[7] = 0.4
    mujoco.mj_forward(m, d)
    mx, dx = oblique_com_pos(params.scales, jnp.asarray(d.qpos))
    assert_close(dx.xpos, d.xpos, "xpos")
    assert_close(dx.geom_xpos, d.geom_xpos, "geom_xpos")
    assert_close(dx.geom_xmat, d.geom_xmat.reshape(-1, 3, 3), "geom_xmat")
    assert_close(dx._impl.cinert, d.cinert, "cinert")
    assert_close(mx.body_invweight0, m.body_invweight0, "body_invweight0")
    assert_close(mx.geom_size, m.geom_size, "geom_size")


def test_oblique_inertia_gradient_matches_central_differences(oblique):
    """The principal frame turns with per-axis scales; the gradient through it is exact."""
    weights = jnp.asarray(np.random.default_rng(4).normal(size=(oblique.mj_model.nbody, 10)))

    @jax.jit
    @jax.value_and_grad
    def loss(scales):
        mx = oblique.mjx_model(oblique.default_params().replace(scales=scales))
        return jnp.sum(weights * mjx.com_pos(mx, mjx.kinematics(mx, mjx.make_data(mx)))._impl.cinert)

    scales = random_person(oblique, 5).scales
    direction = jnp.asarray(np.random.default_rng(6).normal(size=scales.shape))
    h = 1e-6
    fd = (loss(scales + h * direction)[0] - loss(scales - h * direction)[0]) / (2 * h)
    analytic = jnp.dot(loss(scales)[1], direction)
    assert abs(fd - analytic) <= 1e-6 * max(1.0, abs(fd)), f"fd {fd} vs grad {analytic}"
    assert np.all(np.isfinite(loss(jnp.ones_like(scales))[1]))


# ----------------------------------------------------------------------------- joint child frames
def _joint_frame_mjcf(rotation: np.ndarray, t: np.ndarray) -> str:
    """A body ``c`` hung below its joint-child-frame body (as the .osim converter writes a CustomJoint
    whose child frame is offset by ``t`` and turned by ``rotation`` in ``c``): the frame body at the
    parent's joint, ``c`` at the frame's inverse pose, both in one per-axis scale group."""
    import json

    from mjx_biomech.body.rotations import mat_to_quat

    def xml_numbers(values):
        return " ".join(repr(float(v)) for v in values)

    inverse_quat = np.asarray(mat_to_quat(rotation.T[None], np))[0]
    meta = {"format": "mjx_biomech/1",
            "scale_groups": [{"name": "p", "bodies": ["p"], "per_axis": True},
                             {"name": "c", "bodies": ["c", "j_child_frame"], "per_axis": True}],
            "opensim": {"frame_bodies": {"c": "j_child_frame"}}}
    return f"""
<mujoco>
  <worldbody>
    <body name="p" pos="0 0 1">
      <joint name="px" type="slide" axis="1 0 0"/>
      <geom type="box" size=".1 .1 .1" mass="3"/>
      <body name="j_child_frame" pos=".03 -.04 -.2" euler=".1 .2 .3">
        <joint name="q1" axis=".2 .1 .97"/>
        <joint name="q2" axis=".9 -.3 .1"/>
        <body name="c" pos="{xml_numbers(-rotation.T @ t)}" quat="{xml_numbers(inverse_quat)}">
          <geom type="capsule" fromto="0 0 0 0 -.4 0" size=".04" mass="2"/>
          <site name="knee" pos=".01 -.4 .02"/>
          <site name="thigh" pos=".05 -.2 .06"/>
        </body>
      </body>
    </body>
  </worldbody>
  <custom><text name="mjx_biomech" data="{json.dumps(meta).replace('"', '&quot;')}"/></custom>
</mujoco>
"""


@pytest.fixture(scope="module")
def joint_frame(tmp_path_factory):
    angle = np.deg2rad(25.0)
    axis = np.array([0.3, -0.2, 0.9]) / np.linalg.norm([0.3, -0.2, 0.9])
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k  # the child frame's axes in c
    t = np.array([0.01, 0.2, -0.02])  # the child frame's origin in c
    path = tmp_path_factory.mktemp("joint_frame") / "joint_frame.xml"
    path.write_text(_joint_frame_mjcf(rotation, t))
    return mb.load_model(path), rotation, t


def test_body_in_its_joint_frame_body_scales_the_frame_offset_along_its_own_axes(joint_frame):
    """OpenSim's ScaleTool scales a child offset frame's translation ``t`` along the child body's
    axes: the frame lies at ``s ⊙ t`` in the body, so the body at ``-Rᵀ (s ⊙ t)`` in the frame."""
    model, rotation, t = joint_frame
    m0 = model.mj_model
    c = m0.body("c").id
    np.testing.assert_array_equal(scaling.joint_frame_children(m0), [c])
    params = model.default_params().replace(scales=jnp.asarray([1.0, 1.1, 0.9, 1.05, 0.85, 1.2, 0.95]))
    s = np.asarray(model.body_scales(params))
    assert np.ptp(s[c]) > 0.3  # per axis, enough to tell the axes apart
    body_pos = scaling.scaled_fields(m0, s)["body_pos"][c]
    np.testing.assert_allclose(body_pos, -rotation.T @ (s[c] * t), rtol=0, atol=1e-15)
    # Along the frame's axes instead (the rule before): millimetres away.
    assert np.linalg.norm(body_pos - s[c] * (-rotation.T @ t)) > 5e-3


def test_body_in_its_joint_frame_body_same_in_jax_kinematics_static_model_and_mjx(joint_frame):
    model, _, _ = joint_frame
    params = model.default_params().replace(scales=jnp.asarray([1.0, 1.1, 0.9, 1.05, 0.85, 1.2, 0.95]))
    q = jnp.asarray([0.05, 0.4, -0.3])
    kin = model.forward(q, params)
    m = model.to_mujoco(params)
    d = mujoco.MjData(m)
    d.qpos[:] = np.asarray(model.coords_to_qpos(q, params))
    mujoco.mj_kinematics(m, d)
    assert_close(kin.xpos, d.xpos, "xpos (JAX kinematics vs the static model)")
    assert_close(kin.site_xpos, d.site_xpos, "site_xpos (JAX kinematics vs the static model)")
    mx = model.mjx_model(params)
    dx = mjx.kinematics(mx, mjx.make_data(mx).replace(qpos=jnp.asarray(d.qpos)))
    assert_close(dx.site_xpos, d.site_xpos, "site_xpos (MJX vs the static model)")


def test_body_in_its_joint_frame_body_is_traceable(joint_frame):
    """jit, vmap and grad through the rule; the gradient equals central differences."""
    model, _, _ = joint_frame
    q = jnp.asarray([0.05, 0.4, -0.3])
    params = model.default_params()

    def loss(scales):
        return jnp.sum(model.markers(q, params.replace(scales=scales)) ** 2)

    scales = jnp.asarray([1.0, 1.1, 0.9, 1.05, 0.85, 1.2, 0.95])
    grad = jax.jit(jax.grad(loss))(scales)
    direction = jnp.asarray(np.random.default_rng(7).normal(size=scales.shape))
    h = 1e-6
    fd = (loss(scales + h * direction) - loss(scales - h * direction)) / (2 * h)
    assert abs(fd - jnp.dot(grad, direction)) <= 1e-7 * max(1.0, abs(fd))
    batch = jax.jit(jax.vmap(lambda s: model.markers(q, params.replace(scales=s))))(jnp.stack([scales, 1.1 * scales]))
    assert_close(batch[1], model.markers(q, params.replace(scales=1.1 * scales)), "vmap")
