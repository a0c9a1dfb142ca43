""".osim -> MJCF conversion: MuJoCo's kinematics equal OpenSim 4.6's at random poses (<= 1e-6 m)."""

import os
import warnings
from pathlib import Path

import mujoco
import numpy as np
import pytest

from converters import osim as osim_converter
from converters import validate as validator
from converters.opensim_frame import GROUND_TO_WORLD
from mjx_biomech.body.metadata import read_metadata
from mjx_biomech.errors import InputError

osim = pytest.importorskip("opensim")

from osim_models import adopted, custom_joint, spline, vec3  # noqa: E402  (needs opensim)
from test_bridge import binary_stl  # noqa: E402

SHARED = Path(os.environ.get("MJX_BIOMECH_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "data" / "opensim-models"
SHARED_MODELS = [
    "Models/Rajagopal/Rajagopal2016.osim",
    "Models/Gait2392_Simbody/subject01.osim",
    "Pipelines/Gait2392_Simbody/OutputReference/subject01_simbody.osim",
    "Models/Leg6Dof9Musc/leg6dof9musc.osim",
    "Models/Arm26/arm26.osim",
    "Models/Gait10dof18musc/gait10dof18musc.osim",
]


def add_body(model, name, mass=1.0):
    body = osim.Body(name, mass, vec3(0.01, -0.02, 0.03), osim.Inertia(0.02, 0.03, 0.025, 0.001, -0.002, 0.0015))
    model.addBody(body)
    return body


def multiplier(fn, scale):
    return osim.MultiplierFunction(adopted(fn), scale)


def set_coordinate(joint, index, lo, hi, default=0.0, locked=False):
    c = joint.upd_coordinates(index)
    c.setRangeMin(lo)
    c.setRangeMax(hi)
    c.setDefaultValue(default)
    c.setDefaultLocked(locked)
    return c


def custom_model(path):
    """CustomJoints with arbitrary axes, every function type, a coupler, a locked coordinate, offset frames."""
    model = osim.Model()
    model.setName("custom")
    pelvis, thigh, shank, patella = (add_body(model, n, m) for n, m in (("pelvis", 10), ("thigh", 7), ("shank", 3), ("patella", 0.1)))
    root = custom_joint("root", model.getGround(), ((0.1, 0.9, -0.2), (0.3, -0.2, 0.1)), pelvis, ((0, 0, 0), (0, 0, 0)), {
        0: ("pelvis_tilt", (0, 0, 1), osim.LinearFunction(1, 0)),
        1: ("pelvis_list", (1, 0, 0), osim.LinearFunction(1, 0)),
        2: ("pelvis_rotation", (0, 1, 0), osim.LinearFunction(1, 0)),
        3: ("pelvis_tx", (1, 0, 0), osim.LinearFunction(1, 0)),
        4: ("pelvis_ty", (0, 1, 0), osim.LinearFunction(1, 0)),
        5: ("pelvis_tz", (0, 0, 1), osim.LinearFunction(1, 0)),
    })
    hip = custom_joint("hip", pelvis, ((-0.07, -0.06, 0.08), (0.2, 0.1, -0.3)), thigh, ((0.01, 0.2, -0.02), (-0.1, 0.4, 0.25)), {
        0: ("hip_flexion", (0.2, 0.1, 0.97), osim.LinearFunction(1, 0)),
        1: ("hip_adduction", (0.9, -0.3, 0.1), osim.LinearFunction(-0.8, 0.05)),
        2: ("hip_rotation", (0.1, 1.0, -0.2), osim.PolynomialFunction(osim.Vector([0.3, -0.5, 1.1, 0.02]))),
        3: ("hip_flexion", (1, 0.2, 0), spline(osim.SimmSpline, [-1.0, 0.5], [0.01, -0.02])),
        4: (None, (0, 1, 0), osim.Constant(0.015)),
        5: ("hip_adduction", (0.3, 0, 1), spline(osim.PiecewiseLinearFunction, [-0.5, 0.0, 0.4], [0.01, 0.0, 0.02])),
    })
    knee = custom_joint("knee", thigh, ((0.0, -0.4, 0.01), (0, 0, 0)), shank, ((0.0, 0.02, 0.0), (0.1, -0.2, 0.05)), {
        0: ("knee_angle", (0, 0, 1), osim.LinearFunction(1, 0)),
        3: ("knee_angle", (1, 0, 0), multiplier(multiplier(spline(osim.SimmSpline, [-2.0, -1.0, 0.0], [-0.003, 0.004, -0.005]), 1.2), 0.9)),
        4: ("knee_angle", (0, 1, 0), spline(osim.SimmSpline, [-2.0, -1.2, -0.5, 0.0, 0.2], [-0.42, -0.41, -0.40, -0.396, -0.395])),
    })
    patellofemoral = custom_joint("patellofemoral", thigh, ((0.02, -0.38, 0.0), (0.0, 0.3, 0.0)), patella, ((0, 0, 0), (0, 0, 0)), {
        0: ("knee_beta", (0, 0, 1), spline(osim.SimmSpline, [-2.0, -1.0, 0.0, 0.5], [-1.2, -0.8, 0.0, 0.1])),
        3: ("knee_beta", (1, 0, 0), osim.LinearFunction(0.02, 0.05)),
        5: (None, (0, 0, 1), osim.Constant(0.003)),
    })
    for joint in (root, hip, knee, patellofemoral):
        model.addJoint(joint)
    set_coordinate(root, 3, -1, 1)
    set_coordinate(root, 4, -0.5, 1.5, default=0.9)
    set_coordinate(hip, 0, -0.5, 1.8)
    set_coordinate(hip, 1, -0.6, 0.5)
    set_coordinate(hip, 2, -0.7, 0.7, default=0.12, locked=True)
    set_coordinate(knee, 0, -2.2, 0.3)
    set_coordinate(patellofemoral, 0, -99999.9, 99999.9)
    coupler = osim.CoordinateCouplerConstraint()
    coupler.setName("knee_beta_coupler")
    coupler.setIndependentCoordinateNames(osim.ArrayStr("knee_angle", 1))
    coupler.setDependentCoordinateName("knee_beta")
    coupler.setFunction(adopted(spline(osim.SimmSpline, [-2.2, -1.0, 0.3], [-2.0, -0.9, 0.35])))
    model.addConstraint(coupler)
    marker_frame = osim.PhysicalOffsetFrame("shank_marker_frame", shank, osim.Transform(osim.Rotation(0.4, vec3(0.2, 0.9, 0.1)), vec3(0.03, -0.2, 0.01)))
    shank.addComponent(marker_frame)
    for name, frame, location in (("ASIS", pelvis, (0.02, 0.01, 0.12)), ("THI", thigh, (0.05, -0.2, 0.06)),
                                  ("ANK", marker_frame, (0.01, -0.15, 0.04)), ("PAT", patella, (0.03, 0.0, 0.0)),
                                  ("GND", model.getGround(), (1.0, 0.0, -0.5))):
        model.addMarker(osim.Marker(name, frame, vec3(*location)))
    model.finalizeConnections()
    model.printToXML(str(path))
    return path


def chain_model(path):
    """Pin, Slider, Universal, Ball, Gimbal, Planar, Free and Weld joints, each with offsets on both sides."""
    model = osim.Model()
    model.setName("chain")
    parent = model.getGround()
    rng = np.random.default_rng(3)
    kinds = ["FreeJoint", "PinJoint", "SliderJoint", "UniversalJoint", "BallJoint", "GimbalJoint", "PlanarJoint", "WeldJoint"]
    for i, kind in enumerate(kinds):
        body = add_body(model, f"b{i}")
        offsets = [vec3(*rng.uniform(-0.2, 0.2, 3)) for _ in range(4)]
        joint = getattr(osim, kind)(f"j{i}_{kind}", parent, offsets[0], offsets[1], body, offsets[2], offsets[3])
        model.addJoint(joint)
        for k in range(joint.numCoordinates()):
            motion = joint.get_coordinates(k).getMotionType()
            bound = 1.4 if motion == 1 else 0.3  # 1: rotational
            set_coordinate(joint, k, -bound, bound)
        model.addMarker(osim.Marker(f"m{i}", body, vec3(*rng.uniform(-0.1, 0.1, 3))))
        parent = body
    model.finalizeConnections()
    model.printToXML(str(path))
    return path


@pytest.fixture(scope="module")
def custom_osim(tmp_path_factory):
    return custom_model(tmp_path_factory.mktemp("custom") / "custom.osim")


@pytest.fixture(scope="module")
def chain_osim(tmp_path_factory):
    return chain_model(tmp_path_factory.mktemp("chain") / "chain.osim")


def converted(path):
    mj_model = mujoco.MjModel.from_xml_string(osim_converter.to_mjcf(path))
    return mj_model, read_metadata(mj_model)


def test_custom_joints_with_every_function_type_match_opensim(custom_osim):
    result = validator.validate(custom_osim, poses=40, seed=1)
    assert result["max_error_m"] <= 1e-6, result
    assert set(result["markers"]) == {"ASIS", "THI", "ANK", "PAT", "GND"}


def test_pin_slider_universal_ball_gimbal_planar_free_weld_joints_match_opensim(chain_osim):
    result = validator.validate(chain_osim, poses=40, seed=2)
    assert result["max_error_m"] <= 1e-6, result


def test_coordinates_keep_opensim_names_ranges_defaults_locks_and_motion(custom_osim):
    _, metadata = converted(custom_osim)
    os_model = osim.Model(str(custom_osim))
    os_model.initSystem()
    by_name = {c["name"]: c for c in metadata["coordinates"]}
    coordinates = os_model.getCoordinateSet()
    names = [coordinates.get(i).getName() for i in range(coordinates.getSize())]
    assert list(by_name) == [n for n in names if n != "knee_beta"]
    for name, entry in by_name.items():
        c = coordinates.get(name)
        assert entry["range"] == [c.getRangeMin(), c.getRangeMax()]
        assert entry["default"] == c.getDefaultValue()
        assert entry["locked"] == c.getDefaultLocked()
        # OpenSim's "coupled" (3: the coordinate turns and translates) is rotational in the metadata.
        assert entry["motion"] == {1: "rotational", 2: "translational", 3: "rotational"}[c.getMotionType()]
    assert by_name["hip_rotation"]["locked"] and by_name["hip_rotation"]["default"] == 0.12
    assert by_name["hip_adduction"]["joint"] is None  # its every axis is a non-identity function
    coupled = metadata["opensim"]["coupled_coordinates"]
    assert [(c["name"], c["input"]) for c in coupled] == [("knee_beta", "knee_angle")]
    assert all(d["input"] != "knee_beta" for d in metadata["dependent_joints"])


def test_metadata_names_marker_sites_and_one_scale_group_per_body(custom_osim):
    mj_model, metadata = converted(custom_osim)
    assert metadata["format"] == "mjx_biomech/1"
    assert metadata["marker_sets"]["opensim"] == {n: n for n in ("ASIS", "THI", "ANK", "PAT", "GND")}
    groups = {g["name"]: g["bodies"] for g in metadata["scale_groups"]}
    assert set(groups) == {"overall", "pelvis", "thigh", "shank", "patella"}
    assert "ground" not in groups["overall"]  # OpenSim's ScaleTool leaves ground unscaled
    for bodies in groups.values():
        for body in bodies:
            assert mujoco.mj_name2id(mj_model, mujoco.mjtObj.mjOBJ_BODY, body) >= 0


def test_mass_properties_are_kept(custom_osim):
    mj_model, _ = converted(custom_osim)
    body = mj_model.body("thigh")
    assert body.mass[0] == 7.0
    np.testing.assert_allclose(body.ipos, [0.01, -0.02, 0.03], rtol=0, atol=1e-15)
    rotation = np.empty(9)
    mujoco.mju_quat2Mat(rotation, body.iquat)
    rotation = rotation.reshape(3, 3)
    tensor = rotation @ np.diag(body.inertia) @ rotation.T
    expected = [[0.02, 0.001, -0.002], [0.001, 0.03, 0.0015], [-0.002, 0.0015, 0.025]]
    np.testing.assert_allclose(tensor, expected, rtol=0, atol=1e-15)


def test_gravity_and_ground_turn_opensim_y_up_into_mujoco_z_up(custom_osim):
    mj_model, _ = converted(custom_osim)
    np.testing.assert_allclose(mj_model.opt.gravity, [0, 0, -9.80665], rtol=0, atol=1e-12)
    data = mujoco.MjData(mj_model)
    mujoco.mj_kinematics(mj_model, data)
    np.testing.assert_allclose(data.site_xpos[mj_model.site("GND").id], [1.0, 0.5, 0.0], rtol=0, atol=1e-15)


def test_coupled_joints_get_joint_equalities_for_mujoco_dynamics(custom_osim):
    mj_model, metadata = converted(custom_osim)
    knee = mj_model.joint("knee_angle").id
    patella_rotation = mj_model.joint("patellofemoral_rotation1").id
    rows = [i for i in range(mj_model.neq) if mj_model.eq_obj1id[i] == patella_rotation]
    assert len(rows) == 1 and mj_model.eq_obj2id[rows[0]] == knee
    # The quartic follows the composed spline within a few milliradians over the knee's range.
    fn = next(d["function"] for d in metadata["dependent_joints"] if d["joint"] == "patellofemoral_rotation1")
    from mjx_biomech.body import functions

    x = np.linspace(-2.2, 0.3, 50)
    fit = np.polynomial.polynomial.polyval(x, mj_model.eq_data[rows[0], :5])
    assert np.max(np.abs(fit - functions.build(fn, np)(x))) < 0.05


def test_to_mjcf_writes_the_same_xml_it_returns(custom_osim, tmp_path):
    out = tmp_path / "custom.xml"
    xml = osim_converter.to_mjcf(custom_osim, out)
    assert out.read_text() == xml


def test_meshes_found_in_geometry_folder_are_used_and_missing_ones_warn(tmp_path):
    model = osim.Model()
    body = add_body(model, "b")
    model.addJoint(osim.PinJoint("pin", model.getGround(), body))
    body.attachGeometry(osim.Mesh("bone.stl"))
    body.attachGeometry(osim.Mesh("missing.vtp"))
    body.attachGeometry(osim.Sphere(0.05))
    model.finalizeConnections()
    model.printToXML(str(tmp_path / "m.osim"))
    (tmp_path / "Geometry").mkdir()
    binary_stl(tmp_path / "Geometry" / "bone.stl")
    with pytest.warns(UserWarning, match="missing.vtp"):
        mj_model, _ = converted(tmp_path / "m.osim")
    types = sorted(int(t) for t in mj_model.geom_type)
    assert types == sorted([int(mujoco.mjtGeom.mjGEOM_MESH), int(mujoco.mjtGeom.mjGEOM_SPHERE)])


def broken(custom_osim, tmp_path, old, new):
    text = Path(custom_osim).read_text()
    assert old in text
    path = tmp_path / "broken.osim"
    path.write_text(text.replace(old, new, 1))
    return path


def test_malformed_xml_raises_input_error_naming_the_file(custom_osim, tmp_path):
    path = tmp_path / "broken.osim"
    path.write_text(Path(custom_osim).read_text()[:-200])
    with pytest.raises(InputError, match="broken.osim.*XML"):
        osim_converter.to_mjcf(path)


def test_unknown_joint_type_raises_input_error_naming_the_joint(custom_osim, tmp_path):
    text = Path(custom_osim).read_text()
    path = tmp_path / "broken.osim"
    path.write_text(text.replace('<CustomJoint name="knee">', '<EllipsoidJoint name="knee">').replace(
        "</CustomJoint>\n\t\t\t\t<CustomJoint name=\"patellofemoral\">", "</EllipsoidJoint>\n\t\t\t\t<CustomJoint name=\"patellofemoral\">"))
    with pytest.raises(InputError, match=r"broken.osim.*EllipsoidJoint name='knee'.*unsupported joint type"):
        osim_converter.to_mjcf(path)


def test_unknown_function_raises_input_error_naming_the_axis(custom_osim, tmp_path):
    path = broken(custom_osim, tmp_path, "<PolynomialFunction", "<SineWave")
    path.write_text(path.read_text().replace("</PolynomialFunction>", "</SineWave>", 1))
    with pytest.raises(InputError, match=r"broken.osim.*CustomJoint name='hip'.*rotation3.*unknown function type SineWave"):
        osim_converter.to_mjcf(path)


def test_validate_command_prints_max_error_last_and_exits_zero(custom_osim, capsys):
    assert validator.main([str(custom_osim), "--poses", "5"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("max_error_m=") and float(last.split("=")[1]) <= 1e-6


def opensim_markers_in_world(path, metadata, coordinates, names):
    """(poses, M, 3) OpenSim marker positions, MuJoCo world frame, coupled and locked coordinates as the metadata says."""
    os_model = osim.Model(str(path))
    state = os_model.initSystem()
    locked = {c["name"] for c in metadata["coordinates"] if c["locked"]}
    out = []
    for q in coordinates:
        for name, value in validator.all_coordinate_values(metadata, q).items():
            if name not in locked:
                os_model.getCoordinateSet().get(name).setValue(state, value, False)
        os_model.realizePosition(state)
        out.append([GROUND_TO_WORLD @ validator._vec(os_model.getMarkerSet().get(n).getLocationInGround(state)) for n in names])
    return np.array(out)


def core_markers(model, coordinates, params):
    import jax
    import jax.numpy as jnp

    with jax.enable_x64(True):
        f = jax.jit(jax.vmap(lambda q: model.markers(q, params, "opensim")))
        return np.asarray(f(jnp.asarray(coordinates)))


def scaled_params(model, seed):
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(seed)
    with jax.enable_x64(True):
        params = model.default_params(jnp.float64)
        return params.replace(scales=jnp.asarray(rng.uniform(0.8, 1.25, params.scales.shape)),
                              offsets=jnp.asarray(rng.uniform(-0.02, 0.02, params.offsets.shape)))


def test_core_model_loaded_from_osim_places_markers_as_opensim(custom_osim):
    import jax.numpy as jnp

    import mjx_biomech

    model = mjx_biomech.load_model(custom_osim)
    coordinates = validator.sample_coordinates(model, 20, 4)
    names = model.marker_names("opensim")
    expected = opensim_markers_in_world(custom_osim, model.metadata, coordinates, names)
    params = model.default_params(jnp.float64)
    np.testing.assert_allclose(core_markers(model, coordinates, params), expected, rtol=0, atol=1e-6)


def check_export(path, tmp_path, seed):
    import mjx_biomech

    model = mjx_biomech.load_model(path)
    params = scaled_params(model, seed)
    out = osim_converter.export(model, params, tmp_path / "scaled.osim")
    coordinates = validator.sample_coordinates(model, 20, seed)
    names = model.marker_names("opensim")
    expected = opensim_markers_in_world(out, model.metadata, coordinates, names)
    np.testing.assert_allclose(core_markers(model, coordinates, params), expected, rtol=0, atol=1e-6)
    return model, params, out


def test_export_writes_a_scaled_osim_whose_markers_match_the_core_model(custom_osim, tmp_path):
    model, params, out = check_export(custom_osim, tmp_path, 5)
    s = float(np.asarray(model.body_scales(params))[model.mj_model.body("thigh").id][0])
    exported = osim.Model(str(out))
    assert exported.getBodySet().get("thigh").getMass() == pytest.approx(7.0 * s**3, rel=1e-12)


def test_export_refuses_a_source_osim_that_changed_since_conversion(custom_osim, tmp_path):
    import mjx_biomech

    copy = tmp_path / "copy.osim"
    copy.write_text(Path(custom_osim).read_text())
    model = mjx_biomech.load_model(copy)
    copy.write_text(copy.read_text().replace("<mass>7</mass>", "<mass>8</mass>"))
    with pytest.raises(InputError, match="copy.osim.*changed"):
        osim_converter.export(model, model.default_params(), tmp_path / "out.osim")


@pytest.mark.slow
@pytest.mark.parametrize("relative", ["Models/Rajagopal/Rajagopal2016.osim", "Models/Gait2392_Simbody/subject01.osim"])
def test_export_of_shared_models_matches_the_core_model(relative, tmp_path):
    path = SHARED / relative
    if not path.is_file():
        pytest.skip(f"shared OpenSim models not found at {SHARED}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_export(path, tmp_path, 6)


@pytest.mark.slow
@pytest.mark.parametrize("relative", SHARED_MODELS)
def test_shared_opensim_models_match_opensim(relative):
    path = SHARED / relative
    if not path.is_file():
        pytest.skip(f"shared OpenSim models not found at {SHARED}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the shared models come without their .vtp meshes
        result = validator.validate(path, poses=100, seed=0)
    assert result["max_error_m"] <= 1e-6, {k: v for k, v in result.items() if k != "markers"}
