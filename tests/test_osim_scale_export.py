"""The scaled ``.osim`` (``converters.osim.export``) against OpenSim's ScaleTool, on a leg with a
muscle wrapping over a cylinder, built through the OpenSim API: per-axis scale factors, muscles
(path points, wrap object, optimal fiber and tendon slack lengths), masses and inertias (OpenSim's
cylinder rule for unequal factors), joint frames and translation functions as ScaleTool writes
them, marker offsets added; and OpenSim's markers on our ``.osim`` where the core puts them."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mjx_biomech
from converters import osim as osim_converter
from converters.opensim_frame import GROUND_TO_WORLD
from converters.validate import all_coordinate_values, sample_coordinates
from mjx_biomech.errors import InputError

osim = pytest.importorskip("opensim", reason="OpenSim's Python package is the judge of these tests")

from osim_models import build_leg, vec3  # after the importorskip: it needs opensim

# per-axis factors (body frame x, y, z); the pelvis isotropic
FACTORS = {"pelvis": (0.97, 0.97, 0.97), "femur": (1.06, 0.93, 1.10), "tibia": (0.95, 1.08, 1.02),
           "patella": (1.0, 1.0, 1.0), "foot": (1.04, 0.98, 0.96), "toes": (1.0, 1.0, 1.0)}
OFFSETS = {"THI1": (0.004, -0.003, 0.002), "TIB2": (-0.002, 0.005, 0.0)}


def _build(folder):
    """The test leg with a muscle from the pelvis over a femoral wrap cylinder to the tibia, and a
    non-diagonal femur inertia (the products scale too)."""
    path = build_leg(folder / "leg_plain.osim")
    model = osim.Model(str(path))
    bodies = model.getBodySet()
    bodies.get("femur").setInertia(osim.Inertia(0.11, 0.02, 0.10, 0.004, -0.002, 0.001))
    muscle = osim.Thelen2003Muscle("vastus", 1500.0, 0.09, 0.20, 0.05)
    muscle.addNewPathPoint("origin", bodies.get("pelvis"), vec3(0.03, -0.05, 0.08))
    muscle.addNewPathPoint("mid", bodies.get("femur"), vec3(0.04, -0.25, 0.02))
    muscle.addNewPathPoint("insertion", bodies.get("tibia"), vec3(0.05, -0.06, 0.01))
    cylinder = osim.WrapCylinder()
    cylinder.setName("knee_cylinder")
    cylinder.set_radius(0.03)
    cylinder.set_length(0.1)
    cylinder.set_translation(vec3(0.0, -0.39, 0.0))
    bodies.get("femur").addWrapObject(cylinder)
    muscle.updGeometryPath().addPathWrap(cylinder)
    model.addForce(muscle)
    model.finalizeConnections()
    model.printToXML(str(folder / "leg.osim"))
    return folder / "leg.osim"


def _scale_tool(folder, source):
    scales = "".join(f"<Scale><scales>{' '.join(map(repr, f))}</scales><segment>{b}</segment><apply>true</apply></Scale>"
                     for b, f in FACTORS.items())
    setup = folder / "Setup_Scale.xml"
    setup.write_text(f"""<?xml version="1.0"?><OpenSimDocument Version="40000"><ScaleTool name="s">
      <mass>-1</mass><GenericModelMaker><model_file>{source}</model_file></GenericModelMaker>
      <ModelScaler><apply>true</apply><scaling_order> manualScale</scaling_order><ScaleSet><objects>{scales}</objects>
      </ScaleSet><preserve_mass_distribution>false</preserve_mass_distribution>
      <output_model_file>{folder / 'opensim.osim'}</output_model_file></ModelScaler>
      <MarkerPlacer><apply>false</apply></MarkerPlacer></ScaleTool></OpenSimDocument>""")
    osim.ScaleTool(str(setup)).run()
    return osim.Model(str(folder / "opensim.osim"))


def _params(model):
    names = model.scale_param_names
    scales = np.ones(len(names))
    for body, f in FACTORS.items():
        if body == "pelvis":
            scales[names.index(body)] = f[0]
        elif f != (1.0, 1.0, 1.0):
            for axis, value in zip("xyz", f):
                scales[names.index(f"{body}.{axis}")] = value
    offsets = np.zeros((len(model.site_names), 3))
    table = model.marker_sets["opensim"]
    for name, offset in OFFSETS.items():
        offsets[model.site_names.index(table[name])] = offset
    return mjx_biomech.BodyParams(jnp.asarray(scales), jnp.asarray(offsets))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("osim_scale")
    source = _build(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = mjx_biomech.load_model(source)
    model = base.with_scale_groups(per_axis=tuple(b for b, f in FACTORS.items() if b != "pelvis" and f != (1.0, 1.0, 1.0)))
    params = _params(model)
    path = osim_converter.export(model, params, folder / "ours.osim")
    return {"folder": folder, "source": source, "base": base, "model": model, "params": params,
            "ours": osim.Model(str(path)), "theirs": _scale_tool(folder, source)}


def _v(v) -> np.ndarray:
    return np.array([v.get(i) for i in range(3)])


def test_bodies_joints_and_muscles_are_those_of_scale_tool_with_per_axis_factors(exported):
    ours, theirs = exported["ours"], exported["theirs"]
    s_ours, s_theirs = ours.initSystem(), theirs.initSystem()
    for name in FACTORS:
        a, b = theirs.getBodySet().get(name), ours.getBodySet().get(name)
        assert b.getMass() == pytest.approx(a.getMass(), rel=1e-12)
        np.testing.assert_allclose(_v(b.getMassCenter()), _v(a.getMassCenter()), atol=1e-15)
        ia, ib = a.getInertia(), b.getInertia()
        np.testing.assert_allclose([_v(ib.getMoments()), _v(ib.getProducts())], [_v(ia.getMoments()), _v(ia.getProducts())],
                                   rtol=1e-12, atol=1e-18)
    for j in range(theirs.getJointSet().getSize()):
        a = theirs.getJointSet().get(j)
        b = ours.getJointSet().get(a.getName())
        for k in (0, 1):
            np.testing.assert_allclose(_v(b.get_frames(k).get_translation()), _v(a.get_frames(k).get_translation()),
                                       rtol=1e-12, atol=1e-15)
    a, b = theirs.getMuscles().get("vastus"), ours.getMuscles().get("vastus")
    assert b.getOptimalFiberLength() == pytest.approx(a.getOptimalFiberLength(), rel=1e-12)
    assert b.getTendonSlackLength() == pytest.approx(a.getTendonSlackLength(), rel=1e-12)
    assert a.getOptimalFiberLength() != pytest.approx(0.09, rel=1e-3)  # ScaleTool did change it
    knee = (theirs.getCoordinateSet().get("knee_angle"), ours.getCoordinateSet().get("knee_angle"))
    for angle in (0.0, -0.6, -1.4):  # the knee bent: the path wraps over the cylinder
        knee[0].setValue(s_theirs, angle)
        knee[1].setValue(s_ours, angle)
        theirs.realizePosition(s_theirs)
        ours.realizePosition(s_ours)
        assert b.getLength(s_ours) == pytest.approx(a.getLength(s_theirs), rel=1e-12)


def test_markers_are_scale_tools_plus_the_offsets(exported):
    ours, theirs = exported["ours"], exported["theirs"]
    for i in range(theirs.getMarkerSet().getSize()):
        a = theirs.getMarkerSet().get(i)
        b = ours.getMarkerSet().get(a.getName())
        np.testing.assert_allclose(_v(b.get_location()) - _v(a.get_location()), OFFSETS.get(a.getName(), (0, 0, 0)),
                                   atol=1e-15, err_msg=a.getName())


def test_opensim_puts_our_osims_markers_where_the_core_puts_them(exported):
    """The core's per-axis scaling (its MuJoCo model) and OpenSim on the exported .osim agree."""
    model, params, ours = exported["model"], exported["params"], exported["ours"]
    state = ours.initSystem()
    coordinate_set = ours.getCoordinateSet()
    locked = {c.name for c in model.coordinates if c.locked}
    names = model.marker_names("opensim")
    coordinates = sample_coordinates(model, 12, 0)
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        points = np.asarray(jax.vmap(lambda q: model.markers(q, p64, "opensim"))(jnp.asarray(coordinates, jnp.float64)))
    worst = 0.0
    for values, where in zip(coordinates, points):
        for name, value in all_coordinate_values(model.metadata, values).items():
            if name not in locked:
                coordinate_set.get(name).setValue(state, value, False)
        ours.realizePosition(state)
        for name, point in zip(names, where):
            expected = GROUND_TO_WORLD @ _v(ours.getMarkerSet().get(name).getLocationInGround(state))
            worst = max(worst, float(np.linalg.norm(point - expected)))
    assert worst <= 1e-12


def test_the_xml_engine_refuses_per_axis_scales_and_warns_about_unscaled_muscles(exported, tmp_path):
    model, params = exported["model"], exported["params"]
    with pytest.raises(InputError, match="per-axis"):
        osim_converter.export(model, params, tmp_path / "xml.osim", engine="xml")
    iso = exported["base"]
    with pytest.warns(UserWarning, match="muscles"):
        osim_converter.export(iso, iso.scale_params(femur=1.05), tmp_path / "xml.osim", engine="xml")
    with pytest.raises(InputError, match="engine"):
        osim_converter.export(iso, iso.default_params(), tmp_path / "x.osim", engine="simbody")
