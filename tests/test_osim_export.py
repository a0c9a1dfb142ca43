"""Export of MuJoCo body models to OpenSim (.osim built from the joints): OpenSim 4.6 is the oracle."""

import warnings

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

import mjx_biomech
from converters import osim as osim_converter
from converters import osim_build, validate
from converters.mot import read_mot
from converters.opensim_frame import z_up_to_y_up
from converters.trc import write_trc
from mjx_biomech.errors import InputError

osim = pytest.importorskip("opensim")
from test_osim import custom_model  # pytest puts tests/ on sys.path


def random_params(model, seed, max_offset=0.03):
    """Scales uniform in [0.8, 1.2] per parameter; offsets of random direction, length <= max_offset metres."""
    rng = np.random.default_rng(seed)
    params = model.default_params(jnp.float64)
    directions = rng.normal(size=params.offsets.shape)
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    lengths = max_offset * rng.uniform(0.0, 1.0, (len(directions), 1))
    return params.replace(scales=jnp.asarray(rng.uniform(0.8, 1.2, params.scales.shape)),
                          offsets=jnp.asarray(directions * lengths))


def random_poses(model, n, seed):
    lo, hi = model.coordinate_ranges.T
    return np.random.default_rng(seed).uniform(lo, hi, (n, len(lo)))


def core_markers(model, params, poses, marker_set=None):
    """(poses, M, 3) model.markers in OpenSim's Y-up ground frame."""
    f = jax.jit(jax.vmap(lambda q: model.markers(q, params, marker_set)))
    return z_up_to_y_up(np.asarray(f(jnp.asarray(poses, jnp.float64))))


def opensim_markers(path, values_by_pose, names):
    """(poses, M, 3) OpenSim marker positions in ground after setting every coordinate of each pose."""
    model = osim.Model(str(path))
    state = model.initSystem()
    coordinates, markers = model.getCoordinateSet(), model.getMarkerSet()
    out = []
    for values in values_by_pose:
        for name, value in values.items():
            coordinates.get(name).setValue(state, float(value), False)
        model.realizePosition(state)
        out.append([[markers.get(n).getLocationInGround(state).get(i) for i in range(3)] for n in names])
    return np.array(out)


def check_markers(model, params, tmp_path, poses, seed=0):
    """Build, load in OpenSim, compare every marker at the poses; returns (built, OpenSim model path)."""
    built = osim_build.build(model, params)
    path = tmp_path / "built.osim"
    path.write_text(built.xml)
    values = [built.coordinate_values(dict(zip(model.coordinate_names, q))) for q in poses]
    got = opensim_markers(path, values, osim_build.opensim_marker_names(model))
    np.testing.assert_allclose(got, core_markers(model, params, poses), rtol=0, atol=1e-6)
    return built, path


@pytest.fixture(scope="module")
def bundled():
    return mjx_biomech.load_model()


@pytest.fixture(scope="module")
def bundled_params(bundled):
    return random_params(bundled, 11)


@pytest.fixture(scope="module")
def bundled_osim(bundled, bundled_params, tmp_path_factory):
    return osim_converter.export(bundled, bundled_params, tmp_path_factory.mktemp("bundled") / "scaled.osim")


def test_exported_bundled_model_places_every_marker_as_the_core_model(bundled, bundled_params, bundled_osim):
    poses = random_poses(bundled, 20, 1)
    got = opensim_markers(bundled_osim, [dict(zip(bundled.coordinate_names, q)) for q in poses],
                          osim_build.opensim_marker_names(bundled))
    expected = core_markers(bundled, bundled_params, poses)
    assert got.shape == (20, len(bundled.site_names), 3)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_exported_bundled_model_has_the_mass_properties_of_the_statically_scaled_mujoco_model(
        bundled, bundled_params, bundled_osim):
    scaled = bundled.to_mujoco(bundled_params)
    model = osim.Model(str(bundled_osim))
    state = model.initSystem()
    assert model.getTotalMass(state) == pytest.approx(float(np.sum(scaled.body_mass)), rel=1e-12)
    bodies = model.getBodySet()
    for b in range(1, scaled.nbody):
        body = bodies.get(scaled.body(b).name)
        assert body.getMass() == pytest.approx(float(scaled.body_mass[b]), rel=1e-12)
        com = body.getMassCenter()
        np.testing.assert_allclose([com.get(i) for i in range(3)], scaled.body_ipos[b], rtol=0, atol=1e-12)
        inertia = body.getInertia()
        moments, products = inertia.getMoments(), inertia.getProducts()
        tensor = np.diag([moments.get(i) for i in range(3)])
        tensor[0, 1] = tensor[1, 0] = products.get(0)
        tensor[0, 2] = tensor[2, 0] = products.get(1)
        tensor[1, 2] = tensor[2, 1] = products.get(2)
        rotation = np.zeros(9)
        mujoco.mju_quat2Mat(rotation, scaled.body_iquat[b])
        rotation = rotation.reshape(3, 3)
        # MuJoCo's compiler diagonalises the inertia in float64: agreement to its rounding.
        np.testing.assert_allclose(tensor, rotation @ np.diag(scaled.body_inertia[b]) @ rotation.T, rtol=0, atol=1e-12)


def test_exported_coordinates_keep_names_ranges_defaults_and_motion_types(bundled, bundled_osim):
    model = osim.Model(str(bundled_osim))
    model.initSystem()
    coordinates = model.getCoordinateSet()
    assert [coordinates.get(i).getName() for i in range(coordinates.getSize())] == list(bundled.coordinate_names)
    for c, motion in zip(bundled.coordinates, bundled.coordinate_motion):
        exported = coordinates.get(c.name)
        assert (exported.getRangeMin(), exported.getRangeMax()) == c.range
        assert exported.getDefaultValue() == c.default
        assert exported.getDefaultLocked() == c.locked
        assert exported.getMotionType() == {"rotational": 1, "translational": 2}[motion]


def test_marker_names_map_sites_to_names_opensim_accepts(bundled):
    names = osim_build.opensim_marker_names(bundled, "blazepose33")
    assert names[bundled.marker_names("blazepose33").index("left_knee")] == "blazepose33_left_knee"
    assert len(set(osim_build.opensim_marker_names(bundled))) == len(bundled.site_names)


def test_opensim_inverse_kinematics_on_synthetic_trc_recovers_the_coordinates(bundled, bundled_params, bundled_osim, tmp_path):
    marker_set = "bml_movi_87"
    lo, hi = bundled.coordinate_ranges.T
    rng = np.random.default_rng(4)
    times = np.arange(10) / 50.0
    # A smooth motion around mid-range, every coordinate moving (0.3 of its span, at most 0.3 rad or m).
    amplitude = 0.3 * np.minimum(hi - lo, 1.0)
    truth = (lo + hi) / 2 + amplitude * np.sin(2 * np.pi * times[:, None] + rng.uniform(0, 2 * np.pi, len(lo)))
    names = osim_build.opensim_marker_names(bundled, marker_set)
    f = jax.jit(jax.vmap(lambda q: bundled.markers(q, bundled_params, marker_set)))
    write_trc(tmp_path / "trial.trc", times, names, np.asarray(f(jnp.asarray(truth))), z_up_input=True)

    model = osim.Model(str(bundled_osim))  # kept alive: the tool does not own it
    tool = osim.InverseKinematicsTool()
    tool.setModel(model)
    tool.setMarkerDataFileName(str(tmp_path / "trial.trc"))
    tool.setStartTime(float(times[0]))
    tool.setEndTime(float(times[-1]))
    tool.setOutputMotionFileName(str(tmp_path / "trial_ik.mot"))
    tool.setResultsDir(str(tmp_path))
    tool.set_accuracy(1e-9)
    tasks = tool.getIKTaskSet()
    for name in names:
        task = osim.IKMarkerTask()
        task.setName(name)
        task.setWeight(1.0)
        task.setApply(True)
        tasks.cloneAndAppend(task)
    assert tool.run()

    rotational = [n for n, m in zip(bundled.coordinate_names, bundled.coordinate_motion) if m == "rotational"]
    motion = read_mot(tmp_path / "trial_ik.mot").to_internal(rotational)
    np.testing.assert_allclose(motion.times, times, rtol=0, atol=1e-8)
    solved = np.stack([motion.column(n) for n in bundled.coordinate_names], axis=1)
    is_rotational = np.array([m == "rotational" for m in bundled.coordinate_motion])
    error = np.abs(solved - truth)
    assert error[:, is_rotational].max() < 1e-5  # radians (measured 5.3e-7)
    assert error[:, ~is_rotational].max() < 1e-6  # metres (measured 5.5e-9)
    marker_errors = read_mot(tmp_path / "_ik_marker_errors.sto")
    assert marker_errors.column("marker_error_max").max() < 1e-6  # metres (measured 1e-8, as the .sto prints it)


# A plain MJCF (no metadata) with what the bundled model lacks: a slide after a hinge, four
# hinges in a row, hinge anchors, a joint reference angle, a slide driven by a joint equality,
# a body without joints turned to gimbal lock of the XYZ angles (Y by 90 degrees), a site on
# the world body and a full inertia matrix.
PLAIN_MJCF = """
<mujoco>
  <compiler angle="radian"/>
  <worldbody>
    <site name="world_site" pos="0.1 0.2 0.3"/>
    <body name="a" pos="0.1 -0.2 1.0" quat="0.9 0.1 0.3 0.2">
      <inertial pos="0.01 0.02 0.03" mass="2" fullinertia="0.1 0.2 0.15 0.01 0.02 -0.01"/>
      <joint name="a_h1" type="hinge" axis="0 0 1" pos="0.05 0 0" range="-1 1"/>
      <joint name="a_s1" type="slide" axis="1 0.2 0" range="-0.3 0.3"/>
      <joint name="a_h2" type="hinge" axis="1 1 0" pos="0 0.1 0" range="-1 1"/>
      <joint name="a_h3" type="hinge" axis="0 1 0" pos="0 0.1 0" range="-1 1"/>
      <joint name="a_h4" type="hinge" axis="1 0 1" pos="0 0.1 0" range="-1 1"/>
      <joint name="a_h5" type="hinge" axis="0 0 1" pos="0 0.1 0" range="-1 1"/>
      <site name="a/site" pos="0.1 0.2 -0.1"/>
      <body name="b" pos="0 -0.3 0.05" quat="0.8 0 0.6 0">
        <inertial pos="0 -0.1 0" mass="1" diaginertia="0.01 0.02 0.03"/>
        <joint name="b_h" type="hinge" axis="0 0 1" ref="0.2" range="-0.8 1.2"/>
        <joint name="b_s" type="slide" axis="0 1 0"/>
        <site name="b_site" pos="0.05 -0.2 0.02"/>
        <body name="c" pos="0.1 -0.3 0" euler="0.3 1.5707963267948966 0.2">
          <inertial pos="0 0 0" mass="0.5" diaginertia="0.001 0.001 0.001"/>
          <site name="c_site" pos="0 0.05 0.1"/>
        </body>
      </body>
    </body>
  </worldbody>
  <equality>
    <joint joint1="b_s" joint2="b_h" polycoef="0.01 0.02 -0.03 0.005 0"/>
  </equality>
</mujoco>
"""


def test_plain_mjcf_with_split_joints_anchors_and_a_joint_equality_matches_opensim(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MuJoCo finds the 6-DoF chain of one body ill-conditioned; kinematics are fine
        model = mjx_biomech.load_model(mujoco.MjSpec.from_string(PLAIN_MJCF))
    assert [d.joint for d in model.dependents] == ["b_s"]
    params = random_params(model, 3)
    _, path = check_markers(model, params, tmp_path, random_poses(model, 20, 2))
    exported = osim.Model(str(path))
    exported.initSystem()
    joints = exported.getJointSet()
    # a: hinge | slide + 3 hinges (shared anchor) | hinge; b: hinge then slide -> two runs; c: welded.
    assert sorted(joints.get(i).getName() for i in range(joints.getSize())) == [
        "a_joint", "a_link0_joint", "a_link1_joint", "b_joint", "b_link0_joint", "c_joint"]


def test_converted_osim_functions_couplers_and_ground_body_match_opensim_when_built(tmp_path):
    source = custom_model(tmp_path / "custom.osim")
    model = mjx_biomech.load_model(source)
    params = random_params(model, 5, max_offset=0.02)
    poses = validate.sample_coordinates(model, 20, 6)
    built, _ = check_markers(model, params, tmp_path, poses)
    # knee_beta (coupled to knee_angle in the .osim) drives the patella through composite functions.
    assert [(name, source) for name, source, _ in built.coupled] == [("knee_angle_in_patella_joint", "knee_angle")]


def test_free_joint_is_refused_naming_the_coordinate():
    model = mjx_biomech.load_model(mujoco.MjSpec.from_string(
        "<mujoco><worldbody><body name='b'><freejoint name='root'/><geom size='0.1'/></body></worldbody></mujoco>"))
    with pytest.raises(InputError, match="root_tx.*free joint"):
        osim_build.build(model, model.default_params())


def test_export_dispatches_bundled_model_to_the_builder_and_writes_atomically(bundled, tmp_path):
    out = osim_converter.export(bundled, bundled.default_params(), tmp_path / "neutral.osim")
    assert out.read_text() == osim_build.build(bundled, bundled.default_params()).xml
    assert [p.name for p in tmp_path.iterdir()] == ["neutral.osim"]


@pytest.mark.slow
def test_myo_sim_arm_with_joint_equalities_matches_opensim(tmp_path):
    pytest.importorskip("myo_sim")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = mjx_biomech.load_model("myo_sim:myoarm")
    assert model.dependents  # joint equalities become polynomial dependents, then couplers or axes
    check_markers(model, random_params(model, 7), tmp_path, random_poses(model, 5, 8))
