"""The OpenSim bridge on what OpenSim 4.6 loads and on the files it writes.

One model per cause that used to be refused (contact forces with ``A::B`` element names, point
masses and massless links, OpenSim 3 files, constraints MuJoCo has no form for, prescribed
coordinates) converts and places every marker and body as OpenSim does (<= 1e-6 m). Written MJCF
carries no absolute asset path and loads after its folder moves; MuJoCo's warnings become Python
warnings and leave no MUJOCO_LOG.TXT; missing meshes are one warning.
"""

from __future__ import annotations

import shutil
import struct
import sys
import warnings
from pathlib import Path

import mujoco
import numpy as np
import pytest

import mjx_biomech
from converters import osim as osim_converter
from converters import validate as validator
from converters.opensim_frame import GROUND_TO_WORLD
from mjx_biomech.body.loading import MuJoCoWarning
from mjx_biomech.body.metadata import read_metadata
from mjx_biomech.body.static_model import write_scaled_mjcf
from mjx_biomech.errors import InputError


@pytest.fixture(scope="module")
def osim():
    return pytest.importorskip("opensim")


def vec3(osim, *v):
    return osim.Vec3(*[float(x) for x in v])


def matrix(rotation) -> np.ndarray:
    return np.array([[rotation.get(i, j) for j in range(3)] for i in range(3)])


def matches_opensim(path, poses=20):
    result = validator.validate(path, poses=poses, seed=3)
    assert result["max_error_m"] <= 1e-6, result
    return result


def converted(path):
    mj_model = mujoco.MjModel.from_xml_string(osim_converter.to_mjcf(path))
    return mj_model, read_metadata(mj_model)


def only_warning(record, match: str):
    """The one recorded warning whose text contains ``match``."""
    found = [str(w.message) for w in record if match in str(w.message)]
    assert len(found) == 1, [str(w.message) for w in record]
    return found[0]


# ---------------------------------------------------------------- models OpenSim loads
def contact_model(osim, path):
    """A free block and a pinned link, a contact sphere on the link, a half-space floor and a
    HuntCrossleyForce between them (OpenSim writes its parameters as ``<HuntCrossleyForce::...>``)."""
    model = osim.Model()
    model.setName("contact")
    block = osim.Body("block", 2.0, vec3(osim, 0.01, 0.0, 0.0), osim.Inertia(0.02, 0.03, 0.025))
    link = osim.Body("link", 0.5, vec3(osim, 0.0, -0.1, 0.0), osim.Inertia(0.004, 0.001, 0.004))
    model.addBody(block)
    model.addBody(link)
    model.addJoint(osim.FreeJoint("free", model.getGround(), vec3(osim, 0, 1, 0), vec3(osim, 0, 0, 0),
                                  block, vec3(osim, 0, 0, 0), vec3(osim, 0, 0, 0)))
    pin = osim.PinJoint("pin", block, vec3(osim, 0.1, -0.05, 0.02), vec3(osim, 0.3, 0, 0),
                        link, vec3(osim, 0, 0.2, 0), vec3(osim, 0, 0, 0.1))
    model.addJoint(pin)
    for joint in (model.getJointSet().get(0), pin):
        for k in range(joint.numCoordinates()):
            coordinate = joint.upd_coordinates(k)
            coordinate.setRangeMin(-1.0)
            coordinate.setRangeMax(1.0)
    model.addContactGeometry(osim.ContactSphere(0.05, vec3(osim, 0.02, -0.3, 0.01), link, "toe"))
    model.addContactGeometry(osim.ContactHalfSpace(vec3(osim, 0, 0.01, 0), vec3(osim, 0.1, 0, -np.pi / 2),
                                                   model.getGround(), "floor"))
    force = osim.HuntCrossleyForce()
    force.setName("contact")
    force.addGeometry("toe")
    force.addGeometry("floor")
    force.setStiffness(1e6)
    force.setDissipation(1.0)
    model.addForce(force)
    model.addMarker(osim.Marker("tip", link, vec3(osim, 0.0, -0.3, 0.0)))
    model.finalizeConnections()
    model.printToXML(str(path))
    return path


def test_contact_forces_and_double_colon_elements_convert_and_contact_geometry_sits_where_opensim_puts_it(osim, tmp_path):
    path = contact_model(osim, tmp_path / "contact.osim")
    assert "<HuntCrossleyForce::ContactParametersSet" in path.read_text()
    matches_opensim(path)
    model = mjx_biomech.load_model(path)
    mj_model, data = model.mj_model, mujoco.MjData(model.mj_model)
    os_model = osim.Model(str(path))
    state = os_model.initSystem()
    toe = os_model.getContactGeometrySet().get("toe")
    floor = os_model.getContactGeometrySet().get("floor")
    assert mj_model.geom("toe").type == mujoco.mjtGeom.mjGEOM_SPHERE and mj_model.geom("toe").size[0] == 0.05
    assert mj_model.geom("floor").type == mujoco.mjtGeom.mjGEOM_PLANE
    coordinates = validator.sample_coordinates(model, 10, 5)
    for values, qpos in zip(coordinates, validator.qpos_from_coordinates(model, coordinates)):
        for name, value in zip(model.coordinate_names, values):
            os_model.getCoordinateSet().get(name).setValue(state, float(value), False)
        os_model.realizePosition(state)
        data.qpos[:] = qpos
        mujoco.mj_kinematics(mj_model, data)
        centre = toe.getFrame().findStationLocationInGround(state, toe.get_location())
        np.testing.assert_allclose(data.geom_xpos[mj_model.geom("toe").id],
                                   GROUND_TO_WORLD @ validator._vec(centre), rtol=0, atol=1e-12)
    # OpenSim's half-space is x > 0 of its frame; its outward normal, -x, is the MuJoCo plane's +z.
    in_ground, in_frame = floor.getFrame().getTransformInGround(state), floor.getTransform()
    rotation = matrix(in_ground.R()) @ matrix(in_frame.R())
    normal = -rotation[:, 0]
    np.testing.assert_allclose(data.geom_xmat[mj_model.geom("floor").id].reshape(3, 3)[:, 2],
                               GROUND_TO_WORLD @ normal, rtol=0, atol=1e-12)


def pendulum_model(osim, path, prescribed=False):
    """Point masses (zero inertia) on pins, a massless moving link between them, and a massless
    welded tip (static: MuJoCo takes it as it is)."""
    model = osim.Model()
    model.setName("pendulum")
    rod1 = osim.Body("rod1", 1.0, vec3(osim, 0, -0.5, 0), osim.Inertia(0, 0, 0))
    link = osim.Body("link", 0.0, vec3(osim, 0, 0, 0), osim.Inertia(0, 0, 0))
    rod2 = osim.Body("rod2", 1.0, vec3(osim, 0, -0.5, 0), osim.Inertia(0, 0, 0))
    tip = osim.Body("tip", 0.0, vec3(osim, 0, 0, 0), osim.Inertia(0, 0, 0))
    for body in (rod1, link, rod2, tip):
        model.addBody(body)
    zero = vec3(osim, 0, 0, 0)
    model.addJoint(osim.PinJoint("pin1", model.getGround(), zero, zero, rod1, vec3(osim, 0, 0.5, 0), zero))
    model.addJoint(osim.PinJoint("pin_link", rod1, vec3(osim, 0, -0.5, 0), zero, link, zero, vec3(osim, 0.2, 0, 0)))
    pin2 = osim.PinJoint("pin2", link, vec3(osim, 0.05, -0.1, 0), zero, rod2, vec3(osim, 0, 0.5, 0), zero)
    model.addJoint(pin2)
    model.addJoint(osim.WeldJoint("weld_tip", rod2, vec3(osim, 0, -1.0, 0), zero, tip, zero, zero))
    if prescribed:
        coordinate = pin2.upd_coordinates(0)
        coordinate.setDefaultIsPrescribed(True)
        coordinate.setPrescribedFunction(osim.Sine(0.5, 2.0, 0.1))
    for name, body in (("m1", rod1), ("m2", rod2), ("m3", tip)):
        model.addMarker(osim.Marker(name, body, vec3(osim, 0.02, -0.4, 0.01)))
    model.finalizeConnections()
    model.printToXML(str(path))
    return path


def test_point_masses_and_massless_moving_links_get_the_lightest_mass_with_one_warning(osim, tmp_path):
    path = pendulum_model(osim, tmp_path / "pendulum.osim")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        mj_model, metadata = converted(path)
    message = only_warning(record, "moving bodies")
    assert "rod1" in message and "link" in message and "rod2" in message and "tip" not in message
    assert metadata["opensim"]["lightened_bodies"] == ["rod1", "link", "rod2"]
    lightest = osim_converter.LIGHTEST
    assert mj_model.body("rod1").mass[0] == 1.0 and mj_model.body("link").mass[0] == lightest
    np.testing.assert_array_equal(mj_model.body("rod1").inertia, [lightest] * 3)
    assert mj_model.body("tip").mass[0] == 0.0  # welded: not a moving body
    matches_opensim(path)


# OpenSim 3 (Version 30000): joints inside bodies, parent_body / location_in_parent, markers on <body>.
OPENSIM3 = """<?xml version="1.0" encoding="UTF-8" ?>
<OpenSimDocument Version="30000">
<Model name="pendulum3">
<gravity>0 -9.80665 0</gravity>
<BodySet><objects>
<Body name="ground"><mass>0</mass><Joint /></Body>
<Body name="rod1"><mass>1</mass><mass_center>0 -0.25 0</mass_center>
<inertia_xx>0.02</inertia_xx><inertia_yy>0.001</inertia_yy><inertia_zz>0.02</inertia_zz>
<inertia_xy>0</inertia_xy><inertia_xz>0</inertia_xz><inertia_yz>0</inertia_yz>
<Joint><PinJoint name="pin1"><parent_body>ground</parent_body><location_in_parent>0 1 0</location_in_parent>
<orientation_in_parent>0 0.2 0</orientation_in_parent><location>0 0.1 0</location><orientation>0.1 0 0</orientation>
<CoordinateSet><objects><Coordinate name="q1"><default_value>-0.3</default_value><range>-1.5 1.5</range>
</Coordinate></objects></CoordinateSet></PinJoint></Joint></Body>
<Body name="rod2"><mass>1</mass><mass_center>0 -0.25 0</mass_center>
<inertia_xx>0.02</inertia_xx><inertia_yy>0.001</inertia_yy><inertia_zz>0.02</inertia_zz>
<inertia_xy>0</inertia_xy><inertia_xz>0</inertia_xz><inertia_yz>0</inertia_yz>
<Joint><CustomJoint name="hinge2"><parent_body>rod1</parent_body><location_in_parent>0 -0.5 0</location_in_parent>
<orientation_in_parent>0 0 0</orientation_in_parent><location>0 0 0</location><orientation>0 0 0</orientation>
<CoordinateSet><objects><Coordinate name="q2"><range>-1.5 1.5</range></Coordinate></objects></CoordinateSet>
<SpatialTransform>
<TransformAxis name="rotation1"><function><LinearFunction><coefficients>1 0</coefficients></LinearFunction></function>
<coordinates>q2</coordinates><axis>0 0 1</axis></TransformAxis>
<TransformAxis name="rotation2"><function><Constant><value>0</value></Constant></function><coordinates></coordinates>
<axis>0 1 0</axis></TransformAxis>
<TransformAxis name="rotation3"><function><Constant><value>0</value></Constant></function><coordinates></coordinates>
<axis>1 0 0</axis></TransformAxis>
<TransformAxis name="translation1"><function><SimmSpline><x>-1.5 0 1.5</x><y>-0.01 0 0.02</y></SimmSpline></function>
<coordinates>q2</coordinates><axis>1 0 0</axis></TransformAxis>
<TransformAxis name="translation2"><function><Constant><value>0</value></Constant></function><coordinates></coordinates>
<axis>0 1 0</axis></TransformAxis>
<TransformAxis name="translation3"><function><Constant><value>0</value></Constant></function><coordinates></coordinates>
<axis>0 0 1</axis></TransformAxis>
</SpatialTransform></CustomJoint></Joint></Body>
</objects></BodySet>
<MarkerSet><objects>
<Marker name="elbow"><body>rod1</body><location>0.02 -0.5 0.01</location></Marker>
<Marker name="tip"><body>rod2</body><location>0 -0.5 0.03</location></Marker>
</objects></MarkerSet>
</Model>
</OpenSimDocument>
"""


def test_opensim3_model_is_upgraded_through_opensim_and_matches_it(osim, tmp_path, monkeypatch):
    path = tmp_path / "pendulum3.osim"
    path.write_text(OPENSIM3)
    monkeypatch.chdir(tmp_path)
    _, metadata = converted(path)
    assert [c["name"] for c in metadata["coordinates"]] == ["q1", "q2"]
    result = matches_opensim(path)
    assert set(result["markers"]) == {"elbow", "tip"}
    model = mjx_biomech.load_model(path)
    exported = osim_converter.export(model, model.default_params(), tmp_path / "exported.osim")
    assert 'Version="4' in exported.read_text()[:200]
    assert osim.Model(str(exported)).getMarkerSet().getSize() == 2


def test_opensim3_model_without_opensim_is_refused_saying_it_needs_opensim(tmp_path, monkeypatch):
    path = tmp_path / "pendulum3.osim"
    path.write_text(OPENSIM3)
    monkeypatch.setitem(sys.modules, "opensim", None)  # import opensim now raises ImportError
    with pytest.raises(InputError, match=r"pendulum3\.osim: <OpenSimDocument Version=30000>: .*needs the opensim package"):
        osim_converter.to_mjcf(path)


def test_constraint_mujoco_cannot_express_is_kept_in_the_metadata_with_one_warning(osim, tmp_path):
    model = osim.Model()
    model.setName("constrained")
    zero = vec3(osim, 0, 0, 0)
    base = osim.Body("base", 1.0, zero, osim.Inertia(0.01, 0.01, 0.01))
    arm = osim.Body("arm", 1.0, vec3(osim, 0, -0.2, 0), osim.Inertia(0.01, 0.002, 0.01))
    model.addBody(base)
    model.addBody(arm)
    model.addJoint(osim.SliderJoint("slide", model.getGround(), zero, zero, base, zero, zero))
    model.addJoint(osim.PinJoint("pin", base, vec3(osim, 0, 0.1, 0), zero, arm, vec3(osim, 0, -0.2, 0), zero))
    # Holds the arm's origin on the base's y axis (satisfied at the default pose).
    model.addConstraint(osim.PointOnLineConstraint(base, vec3(osim, 0, 1, 0), zero, arm, zero))
    model.addMarker(osim.Marker("hand", arm, vec3(osim, 0.05, -0.4, 0)))
    model.finalizeConnections()
    path = tmp_path / "constrained.osim"
    model.printToXML(str(path))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _, metadata = converted(path)
    assert "PointOnLineConstraint" in only_warning(record, "will not enforce")
    assert metadata["opensim"]["unenforced_constraints"] == [{"name": "pointonlineconstraint",
                                                               "type": "PointOnLineConstraint"}]
    matches_opensim(path)


def test_prescribed_coordinate_is_a_free_coordinate_with_one_warning(osim, tmp_path):
    path = pendulum_model(osim, tmp_path / "prescribed.osim", prescribed=True)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _, metadata = converted(path)
    assert "pin2_coord_0" in only_warning(record, "prescribes")
    assert metadata["opensim"]["prescribed_coordinates"] == ["pin2_coord_0"]
    assert "pin2_coord_0" in [c["name"] for c in metadata["coordinates"]]
    matches_opensim(path)


# ---------------------------------------------------------------- outputs that work elsewhere
MESH_MODEL = """<?xml version="1.0" encoding="UTF-8" ?>
<OpenSimDocument Version="40000"><Model name="meshes">
<BodySet><objects><Body name="b"><mass>1</mass><inertia>0.01 0.01 0.01 0 0 0</inertia>
<attached_geometry>{meshes}</attached_geometry></Body></objects></BodySet>
<JointSet><objects><PinJoint name="pin"><socket_parent_frame>/ground</socket_parent_frame>
<socket_child_frame>/bodyset/b</socket_child_frame><coordinates><Coordinate name="q"/></coordinates></PinJoint></objects>
</JointSet></Model></OpenSimDocument>
"""


def mesh_model(folder: Path, files) -> Path:
    meshes = "".join(f'<Mesh name="g{i}"><mesh_file>{f}</mesh_file></Mesh>' for i, f in enumerate(files))
    path = folder / "meshes.osim"
    path.write_text(MESH_MODEL.format(meshes=meshes))
    return path


def binary_stl(path: Path, size: float = 1.0) -> Path:
    """A tetrahedron with edges ``size`` m along the axes, as a binary STL file."""
    triangles = [((0, 0, 0), (1, 0, 0), (0, 1, 0)), ((0, 0, 0), (0, 1, 0), (0, 0, 1)),
                 ((0, 0, 0), (0, 0, 1), (1, 0, 0)), ((1, 0, 0), (0, 0, 1), (0, 1, 0))]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"\0" * 80 + struct.pack("<I", len(triangles)))
        f.writelines(struct.pack("<12fH", 0, 0, 0, *(size * np.ravel(triangle)), 0) for triangle in triangles)
    return path


def test_converted_mjcf_copies_its_meshes_and_loads_after_its_folder_moves(tmp_path):
    source = tmp_path / "source"
    binary_stl(source / "Geometry" / "bone.stl")
    path = mesh_model(source, ["bone.stl"])
    xml = osim_converter.to_mjcf(path, tmp_path / "out" / "model.xml")
    assert str(tmp_path) not in xml.split("<custom>")[0]  # only the metadata names the source .osim
    assert (tmp_path / "out" / "model_assets" / "bone.stl").read_bytes() == (source / "Geometry" / "bone.stl").read_bytes()
    shutil.move(tmp_path / "out", tmp_path / "elsewhere")
    shutil.rmtree(source / "Geometry")
    moved = mujoco.MjModel.from_xml_path(str(tmp_path / "elsewhere" / "model.xml"))
    assert moved.nmesh == 1 and moved.geom_type[0] == mujoco.mjtGeom.mjGEOM_MESH


MJCF = """<mujoco model="assets">
<compiler meshdir="meshes"/>
<asset><mesh name="small" file="bone.stl"/><mesh name="large" file="../other/bone.stl"/></asset>
<worldbody><body name="b"><joint name="q" type="hinge"/><geom type="mesh" mesh="small"/>
<body name="c" pos="0 0 1"><joint name="r" type="hinge"/><geom type="mesh" mesh="large"/></body></body></worldbody>
</mujoco>
"""


def test_statically_scaled_mjcf_copies_its_assets_and_loads_after_its_folder_moves(tmp_path):
    binary_stl(tmp_path / "model" / "meshes" / "bone.stl", 0.1)
    binary_stl(tmp_path / "model" / "other" / "bone.stl", 0.2)
    source = tmp_path / "model" / "assets.xml"
    source.write_text(MJCF)
    model = mjx_biomech.load_model(source)
    out = write_scaled_mjcf(model, model.default_params(), tmp_path / "out" / "scaled.xml")
    text = out.read_text()
    assert str(tmp_path) not in text and 'meshdir="scaled_assets"' in text
    assert sorted(p.name for p in (tmp_path / "out" / "scaled_assets").iterdir()) == ["bone.stl", "bone_1.stl"]
    shutil.move(tmp_path / "out", tmp_path / "elsewhere")
    shutil.rmtree(tmp_path / "model")
    moved = mujoco.MjModel.from_xml_path(str(tmp_path / "elsewhere" / "scaled.xml"))
    np.testing.assert_array_equal(moved.mesh_vert, model.mj_model.mesh_vert)


def test_mujoco_warnings_become_python_warnings_and_leave_no_log_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mj_model = mujoco.MjModel.from_xml_string('<mujoco><worldbody><body><joint/><geom size="0.1"/></body></worldbody></mujoco>')
    data = mujoco.MjData(mj_model)
    data.qpos[0] = np.nan
    with pytest.warns(MuJoCoWarning, match="Nan, Inf or huge value in QPOS"):
        mujoco.mj_step(mj_model, data)
    assert list(tmp_path.iterdir()) == []


def test_myo_sim_model_loads_and_is_written_without_mujocos_empty_prefix_warning(tmp_path, monkeypatch):
    pytest.importorskip("myo_sim")
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model = mjx_biomech.load_model("myo_sim:myolegs")
        out = write_scaled_mjcf(model, model.default_params(), tmp_path / "out" / "legs.xml")
    assert [str(w.message) for w in record if "prefix" in str(w.message)] == []
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()
    assert mujoco.MjModel.from_xml_path(str(out)).nbody == model.mj_model.nbody


def test_missing_meshes_are_one_warning_that_says_how_many_and_where_it_looked(tmp_path):
    path = mesh_model(tmp_path, ["femur.vtp", "tibia.vtp", "pelvis.vtp", "foot.stl"])
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        osim_converter.to_mjcf(path)
    assert len(record) == 1
    message = str(record[0].message)
    assert "skipped 4 meshes" in message and str(tmp_path / "Geometry") in message
    assert all(name in message for name in ("femur.vtp", "tibia.vtp", "pelvis.vtp", "foot.stl"))
