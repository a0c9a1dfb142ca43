"""The core body model: dynamic (JAX) scaling agrees with MuJoCo's C engine on the statically
scaled model, gradients are right, mass properties scale, and bad input is named."""

import dataclasses

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

import mjx_biomech as mb
from mjx_biomech.errors import InputError


def random_person(model, rng, scale=(0.8, 1.2), offset=0.03):
    p = len(model.scale_param_names)
    s = len(model.site_names)
    return mb.BodyParams(
        jnp.asarray(rng.uniform(*scale, p)), jnp.asarray(rng.uniform(-offset, offset, (s, 3)))
    )


_COMPILED = {}


def batched(model):
    """Jitted (markers, coords_to_qpos) over frames, compiled once per model."""
    if id(model) not in _COMPILED:
        _COMPILED[id(model)] = (
            jax.jit(jax.vmap(model.markers, in_axes=(0, None))),
            jax.jit(jax.vmap(model.coords_to_qpos, in_axes=(0, None))),
        )
    return _COMPILED[id(model)]


def max_marker_error_vs_mujoco(model, params, poses, seed):
    static = model.to_mujoco(params)
    data = mujoco.MjData(static)
    markers, to_qpos = batched(model)
    coords = mb.sample_coordinates(model, jax.random.PRNGKey(seed), poses)
    ours = np.asarray(markers(coords, params))
    qpos = np.asarray(to_qpos(coords, params))
    err = 0.0
    for k in range(poses):
        data.qpos[:] = qpos[k]
        mujoco.mj_kinematics(static, data)
        err = max(err, float(np.abs(ours[k] - data.site_xpos).max()))
    return err


@pytest.fixture(scope="module")
def bundled():
    return mb.load_model()


@pytest.mark.parametrize("which", ["bundled", "myolegs"])
def test_markers_match_mujoco_c_on_statically_scaled_model(which, request):
    model = request.getfixturevalue(which)
    rng = np.random.default_rng(1)
    worst = 0.0
    for trial in range(5):
        params = random_person(model, rng)
        worst = max(worst, max_marker_error_vs_mujoco(model, params, poses=10, seed=trial))
    assert worst <= 1e-6, f"max marker error {worst:.3g} m over 50 poses"


def test_body_origins_match_mujoco_c(bundled):
    rng = np.random.default_rng(2)
    params = random_person(bundled, rng)
    static = bundled.to_mujoco(params)
    data = mujoco.MjData(static)
    q = mb.sample_coordinates(bundled, jax.random.PRNGKey(3))
    data.qpos[:] = np.asarray(bundled.coords_to_qpos(q, params))
    mujoco.mj_kinematics(static, data)
    kin = bundled.forward(q, params)
    np.testing.assert_allclose(kin.xpos, data.xpos, atol=1e-9)
    np.testing.assert_allclose(kin.xmat, data.xmat.reshape(-1, 3, 3), atol=1e-9)


@pytest.mark.parametrize("which", ["bundled", "myolegs"])
def test_marker_gradients_match_central_differences(which, request):
    model = request.getfixturevalue(which)
    rng = np.random.default_rng(4)
    params = random_person(model, rng)
    coords = mb.sample_coordinates(model, jax.random.PRNGKey(5)) * 0.8
    weights = jnp.asarray(rng.normal(size=(len(model.site_names), 3)))

    def loss(q, scales, offsets):
        return jnp.sum(weights * model.markers(q, mb.BodyParams(scales, offsets)))

    grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(coords, params.scales, params.offsets)
    f = jax.jit(loss)
    h = 1e-6
    args = [coords, params.scales, params.offsets]
    for k, g in enumerate(grads):
        direction = jnp.asarray(rng.normal(size=np.shape(args[k])))
        plus = list(args)
        minus = list(args)
        plus[k] = args[k] + h * direction
        minus[k] = args[k] - h * direction
        fd = (f(*plus) - f(*minus)) / (2 * h)
        analytic = jnp.sum(g * direction)
        assert abs(fd - analytic) <= 1e-6 * max(1.0, abs(fd)), f"argument {k}: fd {fd} vs grad {analytic}"


def test_marker_jacobian_matches_mujoco_c_mj_jacsite(bundled):
    """The closed-form marker Jacobian against MuJoCo C's ``mj_jacSite`` on the statically
    scaled model (hinges and slides: qvel is the derivative of qpos), chained with the
    derivative of coords_to_qpos."""
    rng = np.random.default_rng(11)
    fn = jax.jit(bundled.marker_jacobian)
    for seed in range(3):
        params = random_person(bundled, rng)
        static = bundled.to_mujoco(params)
        data = mujoco.MjData(static)
        q = mb.sample_coordinates(bundled, jax.random.PRNGKey(20 + seed))
        kin, jac = fn(q, params)
        data.qpos[:] = np.asarray(bundled.coords_to_qpos(q, params))
        mujoco.mj_kinematics(static, data)
        mujoco.mj_comPos(static, data)
        dqpos = np.asarray(jax.jacfwd(bundled.coords_to_qpos)(q, params))
        jacp = np.zeros((3, static.nv))
        for s in range(static.nsite):
            mujoco.mj_jacSite(static, data, jacp, None, s)
            np.testing.assert_allclose(jac[s], jacp @ dqpos, atol=1e-12, err_msg=bundled.site_names[s])
        np.testing.assert_allclose(kin.site_xpos, data.site_xpos, atol=1e-12)
        np.testing.assert_allclose(kin.xmat, data.xmat.reshape(-1, 3, 3), atol=1e-12)


def test_marker_jacobian_matches_autodiff_with_free_joint_and_couplings(myolegs):
    """myolegs: a free root (quaternion entries) and coupled knee joints, scaled per person."""
    rng = np.random.default_rng(12)
    params = random_person(myolegs, rng)
    q = mb.sample_coordinates(myolegs, jax.random.PRNGKey(13)) * 0.8
    sites = np.arange(0, len(myolegs.site_names), 2)
    kin, jac = jax.jit(myolegs.marker_jacobian, static_argnums=2)(q, params, tuple(sites))
    auto = jax.jacfwd(lambda c: myolegs.forward(c, params, sites=sites).site_xpos)(q)
    np.testing.assert_allclose(jac, auto, atol=1e-12)
    np.testing.assert_allclose(kin.site_xpos, myolegs.markers(q, params)[sites], atol=1e-15)


def test_marker_normal_equations_in_closed_form_equal_the_jacobian_and_autodiff_hessian(bundled, myolegs):
    """``marker_normal_equations`` (from moments of the sites below each body, no Jacobian) on
    the bundled model (hinges and slides) scaled per person, with an unobserved site: gradient and
    ``JᵀJ`` equal those of the closed-form Jacobian, and ``JᵀJ`` plus the second-order term
    equals ``jax.hessian`` of the objective; myolegs (a free root) has no closed form and says so."""
    rng = np.random.default_rng(14)
    params = random_person(bundled, rng)
    q = mb.sample_coordinates(bundled, jax.random.PRNGKey(15))
    sites = np.arange(0, len(bundled.site_names), 3)
    weights = jnp.asarray(rng.uniform(0.5, 2.0, len(sites))).at[4].set(0.0)
    with jax.enable_x64(True):
        targets = bundled.forward(q, params, sites=sites).site_xpos + jnp.asarray(rng.normal(0, 0.03, (len(sites), 3)))
    assert bundled.has_normal_equations and not myolegs.has_normal_equations
    kin, g, JtJ, S = jax.jit(lambda c: bundled.marker_normal_equations(c, params, sites, weights, targets))(q)
    _, jac = bundled.marker_jacobian(q, params, sites)
    J = (jnp.sqrt(weights)[:, None, None] * jac).reshape(-1, len(q))
    r = (jnp.sqrt(weights)[:, None] * (kin.site_xpos - targets)).ravel()
    np.testing.assert_allclose(g, J.T @ r, atol=1e-13)
    np.testing.assert_allclose(JtJ, J.T @ J, atol=1e-12)

    def objective(c):
        return 0.5 * jnp.sum(weights[:, None] * (bundled.forward(c, params, sites=sites).site_xpos - targets) ** 2)

    hessian = jax.hessian(objective)(q)
    np.testing.assert_allclose(JtJ + S, hessian, atol=1e-12)
    assert np.abs(S).max() > 1e-3
    with pytest.raises(ValueError, match="hinges and slides"):
        myolegs.marker_normal_equations(mb.sample_coordinates(myolegs, jax.random.PRNGKey(0)), myolegs.default_params(),
                                        np.arange(3), jnp.ones(3), jnp.zeros((3, 3)))


_BALL_CHAIN = """
<mujoco>
  <worldbody>
    <body name="root" pos="0.1 0 1">
      <inertial pos="0 0 0" mass="1" diaginertia="0.1 0.1 0.1"/>
      <freejoint/>
      <site name="s0" pos="0.05 0.02 0"/>
      <body name="upper" pos="0 0.1 -0.2" quat="0.9 0.1 0.3 0.2">
        <inertial pos="0 0 0" mass="1" diaginertia="0.1 0.1 0.1"/>
        <joint name="ball" type="ball" pos="0 0 0.05"/>
        <site name="s1" pos="0.02 0 -0.1"/>
        <body name="lower" pos="0 0 -0.3">
          <inertial pos="0 0 0" mass="1" diaginertia="0.1 0.1 0.1"/>
          <joint name="oblique" type="hinge" axis="0.3 0.8 0.2" pos="0.01 -0.02 0.03"/>
          <joint name="x" type="hinge" axis="1 0 0" pos="0 0.01 0"/>
          <joint name="slide" type="slide" axis="0 0.6 0.8"/>
          <site name="s2" pos="0 0.03 -0.2"/>
          <site name="s3" pos="0.04 0 -0.1"/>
        </body>
      </body>
    </body>
  </worldbody>
</mujoco>
"""


@pytest.mark.parametrize("which", ["bundled", "myolegs", "ball_chain"])
def test_kinematics_derivative_rule_equals_autodiff_through_the_walk(which, request):
    """The walk's closed-form derivative rule (each body's twist) against JAX's own forward and
    reverse mode through the same walk without the rule: every output (body origins, rotations,
    sites) with respect to every input (qpos, body scales, site offsets); hinges on principal
    and oblique axes with anchors, slides, a ball joint and a free joint."""
    from mjx_biomech.body.kinematics import KinematicTree

    rng = np.random.default_rng(3)
    if which == "ball_chain":
        m = mujoco.MjModel.from_xml_string(_BALL_CHAIN)
        tree = KinematicTree(m)
        qpos = np.concatenate([[0.1, -0.2, 0.9], [0.8, 0.2, -0.3, 0.4], [0.7, -0.1, 0.5, 0.3], [0.4, -0.6, 0.05]])
        scale = np.vstack([np.ones(3), rng.uniform(0.8, 1.2, (m.nbody - 1, 3))])
    else:
        model = request.getfixturevalue(which)
        tree = model._tree
        params = random_person(model, rng)
        qpos = np.asarray(model.coords_to_qpos(mb.sample_coordinates(model, jax.random.PRNGKey(4)) * 0.8, params))
        scale = np.asarray(model.body_scales(params))
    offsets = rng.uniform(-0.02, 0.02, (tree.nsite, 3))
    # half the sites in shuffled order: runs of one body's sites interleave with other bodies'
    sites = rng.permutation(tree.nsite)[: max(tree.nsite // 2, 2)]

    def rule(q, s, o):
        kin = tree.forward(q, s, o, sites)
        return kin.xpos, kin.xmat, kin.site_xpos

    def plain(q, s, o):
        scaled = tree._scaled(s, o)
        kin = tree._walk(q, scaled["body_pos"], scaled["jnt_pos"], scaled["site_pos"], sites)[0]
        return kin.xpos, kin.xmat, kin.site_xpos

    args = (jnp.asarray(qpos), jnp.asarray(scale), jnp.asarray(offsets))
    for mode in (jax.jacfwd, jax.jacrev):
        ours = jax.tree.leaves(mode(rule, argnums=(0, 1, 2))(*args))
        theirs = jax.tree.leaves(mode(plain, argnums=(0, 1, 2))(*args))
        assert max(float(jnp.max(jnp.abs(t))) for t in theirs) > 0.1
        for a, b in zip(ours, theirs):
            np.testing.assert_allclose(a, b, atol=1e-12)


def test_markers_vmap_and_jit_over_frames(bundled):
    params = bundled.default_params()
    coords = mb.sample_coordinates(bundled, jax.random.PRNGKey(6), 7)
    batched = jax.jit(jax.vmap(bundled.markers, in_axes=(0, None)))(coords, params)
    single = bundled.markers(coords[3], params)
    assert batched.shape == (7, len(bundled.site_names), 3)
    np.testing.assert_allclose(batched[3], single, atol=1e-12)


def test_uniform_scale_multiplies_mass_by_cube_and_inertia_by_fifth_power(bundled):
    s = 1.13
    params = bundled.default_params().replace(scales=jnp.full(len(bundled.scale_param_names), 1.0).at[0].set(s))
    scaled = bundled.to_mujoco(params)
    base = bundled.mj_model
    assert np.isclose(scaled.body_mass.sum(), base.body_mass.sum() * s**3, rtol=1e-12)
    np.testing.assert_allclose(np.sort(scaled.body_inertia, axis=1), np.sort(base.body_inertia * s**5, axis=1), rtol=1e-9)


def test_total_mass_option_sets_the_mass(bundled):
    scaled = bundled.to_mujoco(bundled.scale_params(overall=0.93), total_mass=58.0)
    assert np.isclose(scaled.body_mass.sum(), 58.0, rtol=1e-12)


def test_total_mass_with_preserved_distribution_keeps_each_bodys_share(bundled):
    """OpenSim's ScaleTool option: masses from the unscaled shares, inertias following each
    body's mass from its geometrically scaled inertia."""
    params = bundled.scale_params(**{name: 1.0 + 0.02 * k for k, name in enumerate(bundled.scale_param_names)})
    geometric = bundled.to_mujoco(params)
    preserved = bundled.to_mujoco(params, total_mass=58.0, preserve_mass_distribution=True)
    m0 = bundled.mj_model.body_mass
    np.testing.assert_allclose(preserved.body_mass, m0 * 58.0 / m0.sum(), rtol=1e-12)
    moving = geometric.body_mass > 0
    ratio = preserved.body_mass[moving] / geometric.body_mass[moving]
    np.testing.assert_allclose(preserved.body_inertia[moving], geometric.body_inertia[moving] * ratio[:, None], rtol=1e-9)
    assert not np.allclose(ratio, ratio[0])  # the groups' scales differ: the shares are not the geometric ones


def test_scaled_bundled_model_steps_one_second_without_nan(bundled):
    rng = np.random.default_rng(7)
    params = random_person(bundled, rng, offset=0.0)
    m = bundled.to_mujoco(params)
    d = mujoco.MjData(m)
    d.qpos[:] = np.asarray(bundled.coords_to_qpos(bundled.neutral_coordinates(), params))
    for _ in range(int(1.0 / m.opt.timestep)):
        mujoco.mj_step(m, d)
    assert np.all(np.isfinite(d.qpos)) and np.all(np.isfinite(d.qvel))


def test_scaled_myolegs_muscles_follow_the_scale(myolegs):
    s = 1.1
    scaled = myolegs.to_mujoco(myolegs.scale_params(overall=s))
    base = myolegs.mj_model
    # Muscle paths run through sites and wrapping geoms that all scale with their bodies.
    np.testing.assert_allclose(scaled.actuator_length0, base.actuator_length0 * s, rtol=1e-9)
    np.testing.assert_allclose(scaled.actuator_lengthrange, base.actuator_lengthrange * s, rtol=1e-9)
    d = mujoco.MjData(scaled)
    d.ctrl[:] = 0.3
    for _ in range(250):
        mujoco.mj_step(scaled, d)
    assert np.all(np.isfinite(d.qpos))
    assert np.abs(d.actuator_force).max() > 1.0


def test_scaled_myolegs_keeps_joint_couplings_consistent(myolegs):
    rng = np.random.default_rng(8)
    params = random_person(myolegs, rng, offset=0.0)
    static = myolegs.to_mujoco(params)
    q = mb.sample_coordinates(myolegs, jax.random.PRNGKey(9))
    qpos = np.asarray(myolegs.coords_to_qpos(q, params))
    checked = 0
    for e in range(static.neq):
        if static.eq_type[e] != mujoco.mjtEq.mjEQ_JOINT:
            continue
        j1, j2 = static.eq_obj1id[e], static.eq_obj2id[e]
        a1, a2 = static.jnt_qposadr[j1], static.jnt_qposadr[j2]
        x = qpos[a2] - static.qpos0[a2]
        poly = static.eq_data[e, :5]
        expected = static.qpos0[a1] + sum(c * x**k for k, c in enumerate(poly))
        assert np.isclose(qpos[a1], expected, atol=1e-12), static.joint(j1).name
        checked += 1
    assert checked == 14


def test_to_mjcf_writes_a_model_mujoco_loads_with_the_same_markers(bundled, tmp_path):
    params = bundled.scale_params(overall=1.05, thigh_r=0.95)
    path = bundled.to_mjcf(params, tmp_path / "scaled.xml")
    reloaded = mb.load_model(path)
    q = mb.sample_coordinates(bundled, jax.random.PRNGKey(10))
    # MuJoCo's XML writer prints 6 significant digits, so the file is exact to ~1e-6 relative.
    np.testing.assert_allclose(
        reloaded.markers(q, reloaded.default_params()), bundled.markers(q, params), rtol=0, atol=5e-6
    )
    assert reloaded.coordinate_names == bundled.coordinate_names
    assert reloaded.marker_sets == bundled.marker_sets


def test_missing_model_file_is_named():
    with pytest.raises(InputError, match="does-not-exist.xml: model file not found"):
        mb.load_model("does-not-exist.xml")


def test_malformed_mjcf_is_named(tmp_path):
    bad = tmp_path / "broken.xml"
    bad.write_text("<mujoco><worldbody><body></worldbody></mujoco>")
    with pytest.raises(InputError, match="broken.xml: not a valid MJCF"):
        mb.load_model(bad)


def test_marker_set_naming_an_unknown_site_is_named(tmp_path):
    import json

    meta = json.dumps({"marker_sets": {"coco17": {"nose": "no_such_site"}}}).replace('"', "&quot;")
    path = tmp_path / "m.xml"
    path.write_text(
        f'<mujoco><custom><text name="mjx_biomech" data="{meta}"/></custom>'
        '<worldbody><body name="b"><joint name="j" type="hinge"/><geom size=".1"/>'
        '<site name="s"/></body></worldbody></mujoco>'
    )
    with pytest.raises(InputError, match="'nose' names site 'no_such_site'"):
        mb.load_model(path)


def test_params_of_the_wrong_shape_are_named(bundled):
    good = bundled.default_params()
    with pytest.raises(InputError, match="params.scales has shape"):
        bundled.markers(bundled.neutral_coordinates(), good.replace(scales=jnp.ones(3)))
    with pytest.raises(InputError, match="params.offsets has shape"):
        bundled.markers(bundled.neutral_coordinates(), good.replace(offsets=jnp.zeros((2, 3))))
    with pytest.raises(InputError, match="coords has shape"):
        bundled.markers(jnp.zeros(3), good)


def test_model_is_frozen_and_a_static_jit_argument(bundled):
    with pytest.raises(dataclasses.FrozenInstanceError):
        bundled.source = "elsewhere"
    with pytest.raises(TypeError):
        bundled.marker_sets["coco17"] = {}
    tied = bundled.with_scale_groups(tie_left_right=True)
    assert "thigh_r" in bundled.scale_param_names and "thigh" in tied.scale_param_names
    assert bundled.metadata["scale_groups"] != tied.metadata["scale_groups"]
    # Hashing is by identity: two loads are two static arguments, one model is one.
    assert bundled != mb.load_model() and len({bundled, bundled, tied}) == 2
    markers = jax.jit(lambda model, q: model.markers(q, model.default_params()), static_argnums=0)
    q = bundled.neutral_coordinates()
    np.testing.assert_allclose(markers(tied, q), markers(bundled, q), atol=1e-6)


PLAIN_LEGS = """<mujoco><worldbody>
  <body name="thigh_r" pos="0 -.1 1"><joint name="hip_r" type="hinge" axis="0 1 0"/><geom size=".05"/>
    <site name="knee_r" pos="0 0 -.4"/></body>
  <body name="thigh_l" pos="0 .1 1"><joint name="hip_l" type="hinge" axis="0 1 0"/><geom size=".05"/>
    <site name="knee_l" pos="0 0 -.4"/></body>
</worldbody></mujoco>"""


def test_plain_mjcf_scale_groups_tie_and_split_per_axis(tmp_path):
    path = tmp_path / "legs.xml"
    path.write_text(PLAIN_LEGS)
    model = mb.load_model(path)
    assert model.scale_param_names == ("overall", "thigh_r", "thigh_l")
    tied = model.with_scale_groups(tie_left_right=True, per_axis=("thigh",))
    assert tied.coordinate_names == model.coordinate_names == ("hip_r", "hip_l")
    assert tied.scale_param_names == ("overall", "thigh.x", "thigh.y", "thigh.z")
    knees = tied.markers(tied.neutral_coordinates(), tied.scale_params(**{"thigh.z": 1.5}))
    np.testing.assert_allclose(knees, [[0, -0.1, 0.4], [0, 0.1, 0.4]], atol=1e-6)
    with pytest.raises(InputError, match="per_axis: group 'shank'"):
        model.with_scale_groups(per_axis=("shank",))


def _full_inertia(m):
    out = []
    for b in range(m.nbody):
        r = np.zeros(9)
        mujoco.mju_quat2Mat(r, m.body_iquat[b])
        r = r.reshape(3, 3)
        out.append(r @ np.diag(m.body_inertia[b]) @ r.T)
    return np.array(out)


def test_compiled_myo_sim_mjmodel_scales_like_its_spec(myolegs):
    import myo_sim

    from_model = mb.load_model(myo_sim.load("myolegs")[0])
    assert from_model.spec is None and from_model.coordinate_names == myolegs.coordinate_names
    params = random_person(myolegs, np.random.default_rng(11))
    via_spec = myolegs.to_mujoco(params)
    via_fields = from_model.to_mujoco(params)
    for field in ("body_pos", "body_mass", "site_pos", "actuator_length0", "actuator_lengthrange", "tendon_length0", "eq_data"):
        np.testing.assert_allclose(getattr(via_fields, field), getattr(via_spec, field), atol=1e-12, err_msg=field)
    np.testing.assert_allclose(_full_inertia(via_fields), _full_inertia(via_spec), atol=1e-12)
    assert max_marker_error_vs_mujoco(from_model, params, poses=5, seed=12) <= 1e-6


def test_myofullbody_scales_with_its_muscles():
    pytest.importorskip("myo_sim", reason="myo-sim is not installed")
    model = mb.load_model("myo_sim:myofullbody")
    scaled = model.to_mujoco(model.scale_params(overall=1.1))
    assert np.isclose(scaled.body_mass.sum(), model.total_mass() * 1.1**3, rtol=1e-9)
    np.testing.assert_allclose(scaled.actuator_length0, model.mj_model.actuator_length0 * 1.1, rtol=1e-9)


def test_tied_and_per_axis_scale_groups_match_mujoco_c(bundled):
    model = bundled.with_scale_groups(tie_left_right=True, per_axis=("torso", "pelvis"))
    assert "thigh" in model.scale_param_names and "thigh_r" not in model.scale_param_names
    assert {"torso.x", "torso.y", "torso.z", "pelvis.x"} <= set(model.scale_param_names)
    params = random_person(model, np.random.default_rng(13))
    assert max_marker_error_vs_mujoco(model, params, poses=10, seed=14) <= 1e-6
    # One tied parameter moves both thighs.
    scales = np.asarray(model.body_scales(model.scale_params(thigh=1.2)))
    for body in ("femur_r", "femur_l"):
        np.testing.assert_allclose(scales[model.body_names.index(body)], 1.2)
