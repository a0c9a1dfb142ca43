"""Scaling to markers (``mjx-biomech scale``, ``mjx_biomech.fit_markers``): synthetic people of
known scales and marker offsets, OpenSim 4.6's tools the judge of what is written.

- The bundled model, a few groups scaled 0.92–1.08, offsets on 8 of its 87 markers (the others,
  every second one held ``fixed``), 2 mm noise and 5 % gaps, a static and a motion trial.
- The small leg of ``tests/osim_models.py`` built through the OpenSim API, its pelvis, femur,
  tibia and foot scaled, through the command line; OpenSim's InverseKinematicsTool runs the scaled
  ``.osim`` with the ``.trc``, and its ScaleTool scales the same bodies by the same factors.
- myo_sim's myolegs with a marker set attached by body name and a one-frame static trial.
"""

import contextlib
import json
import shutil

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

import mjx_biomech
from converters import marker_sets, mot, opensim_setup, trc
from mjx_biomech import cli
from mjx_biomech.capture.marker_trials import MarkerTrial
from mjx_biomech.errors import InputError

osim = pytest.importorskip("opensim", reason="OpenSim's Python package is the judge of these tests")

from osim_models import build_leg  # after the importorskip: it needs opensim

NOISE_M = 0.002
RATE = 60.0
LEG_SCALES = {"pelvis": 0.95, "femur": 1.08, "tibia": 0.93, "foot": 1.05}
# Markers added to the leg so that every segment is seen by four or more, well spread.
LEG_EXTRA = {"RPSI": ("pelvis", (-0.15, 0.05, 0.07)), "LPSI": ("pelvis", (-0.15, 0.05, -0.07)),
             "RCREST": ("pelvis", (-0.05, 0.12, 0.14)), "THI3": ("femur", (-0.05, -0.25, 0.06)),
             "THI4": ("femur", (0.05, -0.12, 0.06)), "TIB3": ("tibia", (0.05, -0.25, -0.04)),
             "TIB4": ("tibia", (-0.04, -0.1, 0.06)), "MT2": ("foot", (0.1, 0.0, 0.0))}
# Anatomical landmarks held at their placement (OpenSim's <fixed>); the rest get offsets.
LEG_FIXED = ("RASI", "LASI", "SACR", "KNE", "ANK", "HEE", "MT1")
# Gaps (frame range, marker), none leaving a segment undetermined.
LEG_GAPS = ((range(3, 7), "THI2"), (range(10, 12), "MT5"), (range(20, 24), "TIB1"), (range(30, 31), "RPSI"))
LEG_OFFSETS = {"THI1": (0.006, -0.004, 0.003), "TIB2": (-0.005, 0.004, 0.0), "MT5": (0.003, 0.005, -0.004)}
# Markers on the patella and the toes: their scales (no child joint) trade against their offsets.
LEG_UNDETERMINED = ("PAT", "TOE")
LEG_MASS = 20.0


def _markers(model, coords, params, marker_set=None) -> np.ndarray:
    """(T, M, 3) model markers at coordinates (T, C), float64."""
    with jax.enable_x64(True):
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        return np.asarray(jax.vmap(lambda q: model.markers(q, params, marker_set))(jnp.asarray(coords)))


def _observed(points, rng, gaps=0.05) -> np.ndarray:
    """``points`` with 2 mm noise and a fraction ``gaps`` of them missing."""
    out = points + rng.normal(0.0, NOISE_M, points.shape)
    out[rng.random(points.shape[:2]) < gaps] = np.nan
    return out


def _offsets(model, by_marker: dict, marker_set=None) -> np.ndarray:
    """(S, 3) site offsets from marker name -> (3,) metres."""
    offsets = np.zeros((len(model.site_names), 3))
    names = model.marker_names(marker_set)
    sites = model.marker_site_ids(marker_set)
    for name, value in by_marker.items():
        offsets[sites[names.index(name)]] = value
    return offsets


# --------------------------------------------------------------------- the bundled model
@pytest.fixture(scope="module")
def bundled():
    model = mjx_biomech.load_model()
    marker_set = "bml_movi_87"
    names = model.marker_names(marker_set)
    rng = np.random.default_rng(0)
    fixed = set(names[::2])
    moved = rng.choice([n for n in names if n not in fixed], 8, replace=False)
    offsets = _offsets(model, {n: rng.normal(0.0, 0.006, 3) for n in moved}, marker_set)
    truth = model.scale_params(pelvis=0.92, thigh_r=1.06, thigh_l=1.06, leg_r=0.94, leg_l=0.94, torso=1.08)
    truth = truth.replace(offsets=jnp.asarray(offsets))
    lo, hi = model.coordinate_ranges.T
    index = model.coordinate_names.index
    middle = np.clip(model.neutral_coordinates(), lo + 0.3 * (hi - lo), hi - 0.3 * (hi - lo))
    t = np.arange(24) / 30.0
    walk = middle + 0.2 * (hi - lo) * np.sin(2 * np.pi * 0.7 * t[:, None] + rng.uniform(0, 2 * np.pi, len(lo)))
    walk[:, index("pelvis_tx")] = 0.5 + t
    walk[:, [index("pelvis_ty"), index("pelvis_tz")]] = (0.0, 0.95)
    static = np.tile(model.neutral_coordinates(), (4, 1))
    static[:, index("pelvis_tz")] = 0.95
    trials = [MarkerTrial(name, np.arange(len(q)) / 30.0, names, _observed(_markers(model, q, truth, marker_set), rng))
              for name, q in (("static", static), ("walk", walk))]
    result = mjx_biomech.fit_markers(model, trials[1], static=trials[0], marker_set=marker_set, fixed_markers=fixed,
                                     marker_sigma_m=NOISE_M)
    return {"model": model, "truth": truth, "offsets": offsets, "walk": walk, "result": result, "fixed": fixed,
            "marker_set": marker_set}


def test_bundled_model_scales_are_recovered_within_half_a_percent(bundled):
    model, result = bundled["model"], bundled["result"]
    truth = np.asarray(model.body_scales(bundled["truth"]))
    fitted = np.asarray(model.body_scales(result.params))
    np.testing.assert_allclose(fitted[1:], truth[1:], rtol=0.005)
    assert set(result.fitted_scales) == set(model.scale_param_names) - {"overall"}  # every group covered


def test_bundled_model_marker_offsets_are_recovered_within_3_mm_and_fixed_markers_stay(bundled):
    result = bundled["result"]
    sites = bundled["model"].marker_site_ids(bundled["marker_set"])
    error = np.linalg.norm(result.offsets - bundled["offsets"][sites], axis=1)
    assert error.max() <= 0.003, dict(zip(result.marker_names, error))
    held = [result.marker_names.index(n) for n in bundled["fixed"]]
    assert np.all(result.offsets[held] == 0.0) and set(result.fixed_markers) == bundled["fixed"]


def test_bundled_model_joint_angles_are_within_half_a_degree_rms(bundled):
    """Pelvis, hip, knee, ankle and lumbar angles of the motion trial (wrists and toes, seen by a
    few close markers, are as uncertain as 2 mm noise makes them; see tests/test_ik.py)."""
    model, result = bundled["model"], bundled["result"]
    (walk,) = result.trials
    joints = [i for i, n in enumerate(model.coordinate_names)
              if n.startswith(("pelvis_tilt", "pelvis_list", "pelvis_rotation", "hip_", "knee_", "ankle_", "lumbar_"))]
    error = np.degrees(walk.coordinates - bundled["walk"])[:, joints]
    assert np.sqrt(np.mean(error**2)) <= 0.5
    assert walk.converged.all()


# --------------------------------------------------------------------- a leg from the OpenSim API
def _leg_motion(model, frames: int) -> np.ndarray:
    """(frames, C) a swing of the leg, every joint moving, within the clamped ranges."""
    t = np.arange(frames) / RATE
    w = 2 * np.pi * 1.2 * t
    values = {
        "pelvis_tilt": 0.1 * np.sin(w), "pelvis_list": 0.08 * np.cos(w), "pelvis_rotation": 0.2 + 0.1 * np.sin(w),
        "pelvis_tx": 0.3 + 1.2 * t, "pelvis_ty": 0.92 + 0.01 * np.sin(w), "pelvis_tz": 0.05 * t,
        "hip_flexion": 0.4 + 0.5 * np.sin(w), "hip_adduction": -0.1 + 0.25 * np.cos(w),
        "hip_rotation": 0.3 * np.sin(w + 1), "knee_angle": -0.6 + 0.5 * np.sin(w + 0.3),
        "ankle_angle": 0.3 * np.sin(w - 0.5), "mtp_angle": np.full(frames, 0.1),
    }
    return np.stack([values[n] for n in model.coordinate_names], axis=1)


def _leg_standing(model, frames: int) -> np.ndarray:
    q = np.tile(model.neutral_coordinates(), (frames, 1))
    q[:, model.coordinate_names.index("pelvis_ty")] = 0.92
    q[:, model.coordinate_names.index("knee_angle")] = -0.05
    return q


@pytest.fixture(scope="module")
def leg(tmp_path_factory):
    """The leg (with fixed landmarks), its static and walk .trc (KNE_MED missing from both),
    ``mjx-biomech scale`` on them, and OpenSim's InverseKinematicsTool on the scaled .osim."""
    folder = tmp_path_factory.mktemp("leg")
    built = osim.Model(str(build_leg(folder / "built.osim")))
    for name, (body, location) in LEG_EXTRA.items():
        built.addMarker(osim.Marker(name, built.getBodySet().get(body), osim.Vec3(*location)))
    for name in LEG_FIXED:
        built.getMarkerSet().get(name).set_fixed(True)
    built.finalizeConnections()
    path = folder / "leg.osim"
    built.printToXML(str(path))
    model = mjx_biomech.load_model(path)
    truth = model.scale_params(**LEG_SCALES).replace(offsets=jnp.asarray(_offsets(model, LEG_OFFSETS)))
    names = [n for n in model.marker_names() if n != "KNE_MED"]
    keep = [model.marker_names().index(n) for n in names]
    rng = np.random.default_rng(5)
    walk = _leg_motion(model, 40)
    files = {}
    for name, q in (("static", _leg_standing(model, 10)), ("walk", walk)):
        points = _observed(_markers(model, q, truth)[:, keep], rng, gaps=0.0)
        for frames, marker in LEG_GAPS:
            points[[f for f in frames if f < len(q)], names.index(marker)] = np.nan
        files[name] = trc.write_trc(folder / f"{name}.trc", np.arange(len(q)) / RATE, names, points, units="mm",
                                    z_up_input=True)
    out = folder / "scaled"
    assert cli.main(["scale", str(path), "--static", str(files["static"]), "--trials", str(files["walk"]),
                     "--mass", str(LEG_MASS), "--marker-sigma", str(NOISE_M), "--out", str(out)]) == 0

    (folder / "opensim").mkdir()
    tool = osim.InverseKinematicsTool()
    tool.setName("walk")
    tool.set_model_file(str(out / "model_scaled.osim"))
    tool.setMarkerDataFileName(str(files["walk"]))
    tool.set_accuracy(1e-8)
    tool.setStartTime(0.0)
    tool.setEndTime(float((len(walk) - 1) / RATE))
    tool.setResultsDir(str(folder / "opensim"))
    tool.setOutputMotionFileName(str(folder / "opensim" / "walk.mot"))
    for name in names:
        task = osim.IKMarkerTask()
        task.setName(name)
        task.setWeight(1.0)
        tool.getIKTaskSet().cloneAndAppend(task)
    tool.printToXML(str(folder / "Setup_IK.xml"))
    assert osim.InverseKinematicsTool(str(folder / "Setup_IK.xml")).run()
    return {"folder": folder, "model": model, "truth": truth, "walk": walk, "out": out, "files": files,
            "report": json.loads((out / "report.json").read_text()), "opensim_mot": folder / "opensim" / "walk.mot"}


def test_leg_scales_of_segments_with_a_child_joint_are_recovered_within_half_a_percent(leg):
    scales = leg["report"]["scales"]["parameters"]
    for name, value in LEG_SCALES.items():
        assert abs(scales[name] / value - 1) <= 0.005, (name, scales[name], value)


def test_leg_joint_angles_are_within_half_a_degree_rms(leg):
    model = leg["model"]
    table = mot.read_mot(leg["out"] / "walk.mot")
    rotational = [n for n, m in zip(model.coordinate_names, model.coordinate_motion) if m == "rotational"]
    error = [table.column(n) - np.degrees(leg["walk"][:, model.coordinate_names.index(n)]) for n in rotational]
    assert np.sqrt(np.mean(np.square(error))) <= 0.5


def test_leg_scales_and_offsets_the_data_cannot_determine_are_flagged_and_the_others_have_honest_errors(leg):
    """The patella's and toes' scales trade against their markers' offsets (LEG_UNDETERMINED):
    the report says so; the scales it calls determined are within 4 standard errors of the truth."""
    report = leg["report"]["scales"]
    flagged = set(report["not_determined"])
    assert {"patella", "toes"} <= flagged, report["sigma_pct"]
    for name, value in LEG_SCALES.items():
        assert name not in flagged
        error_pct = 100 * abs(np.log(report["parameters"][name] / value))
        assert error_pct <= 4 * report["sigma_pct"][name], (name, error_pct, report["sigma_pct"][name])
    markers = leg["report"]["markers"]
    assert all(markers[n]["offset_sigma_m"] is None for n in LEG_FIXED)


def test_leg_marker_offsets_are_recovered_within_3_mm(leg):
    """Every marker but those on the patella and toes, whose scales the data cannot tell from
    their offsets; the fixed landmarks stay where the model puts them."""
    markers = leg["report"]["markers"]
    for name, entry in markers.items():
        if name in LEG_UNDETERMINED:
            continue
        error = np.linalg.norm(np.array(entry["offset_m"]) - np.array(LEG_OFFSETS.get(name, (0.0, 0.0, 0.0))))
        assert error <= 0.003, (name, entry["offset_m"])
        assert entry["fixed"] == (name in LEG_FIXED)
    assert all(markers[n]["offset_m"] == [0.0, 0.0, 0.0] for n in LEG_FIXED)


def test_opensim_ik_on_the_scaled_osim_reproduces_our_joint_angles(leg):
    ours = mot.read_mot(leg["out"] / "walk.mot")
    theirs = mot.read_mot(leg["opensim_mot"])
    np.testing.assert_allclose(ours.times, theirs.times, atol=1e-6)
    model = leg["model"]
    for name, motion in zip(model.coordinate_names, model.coordinate_motion):
        scale = 1.0 if motion == "rotational" else 1e3
        assert np.max(np.abs(ours.column(name) - theirs.column(name))) * scale <= 0.1, name  # 0.1° or 0.1 mm


def test_scaled_osim_masses_and_inertias_are_those_of_opensims_scale_tool(leg, tmp_path):
    """ScaleTool scaling the same bodies by our factors to the same mass, distribution preserved."""
    generic = osim.Model(str(leg["folder"] / "leg.osim"))
    bodies = {n: b for n, b in leg["report"]["scales"]["bodies"].items() if generic.getBodySet().contains(n)}
    scales = "".join(f"<Scale><scales>{b[0]!r} {b[0]!r} {b[0]!r}</scales><segment>{name}</segment>"
                     "<apply>true</apply></Scale>" for name, b in bodies.items())
    setup = tmp_path / "Setup_Scale.xml"
    setup.write_text(f"""<?xml version="1.0"?><OpenSimDocument Version="40000"><ScaleTool name="s">
      <mass>{LEG_MASS}</mass><GenericModelMaker><model_file>{leg['folder'] / 'leg.osim'}</model_file></GenericModelMaker>
      <ModelScaler><apply>true</apply><scaling_order> manualScale</scaling_order><ScaleSet><objects>{scales}</objects>
      </ScaleSet><preserve_mass_distribution>true</preserve_mass_distribution>
      <output_model_file>{tmp_path / 'opensim.osim'}</output_model_file></ModelScaler>
      <MarkerPlacer><apply>false</apply></MarkerPlacer></ScaleTool></OpenSimDocument>""")
    osim.ScaleTool(str(setup)).run()  # reports failure whenever marker placement is off
    theirs, ours = osim.Model(str(tmp_path / "opensim.osim")), osim.Model(str(leg["out"] / "model_scaled.osim"))
    for name in bodies:
        a, b = theirs.getBodySet().get(name), ours.getBodySet().get(name)
        assert b.getMass() == pytest.approx(a.getMass(), rel=1e-9)
        np.testing.assert_allclose([b.getInertia().getMoments().get(i) for i in range(3)],
                                   [a.getInertia().getMoments().get(i) for i in range(3)], rtol=1e-9)
    assert sum(ours.getBodySet().get(i).getMass() for i in range(ours.getBodySet().getSize())) == pytest.approx(LEG_MASS)


def test_report_lists_the_marker_the_trc_lacks_and_the_outputs(leg):
    report = leg["report"]
    assert report["trials"]["walk"]["skipped_markers"] == ["KNE_MED"]
    assert report["trials"]["static"]["skipped_markers"] == ["KNE_MED"]
    assert not report["markers"]["KNE_MED"]["fitted"]
    for name in ("model_scaled.osim", "model_scaled.xml", "walk.mot", "walk_marker_errors.sto", "static.mot"):
        assert (leg["out"] / name).stat().st_size > 0
    assert (leg["out"] / "plots" / "scales.png").stat().st_size > 0
    assert mujoco.MjModel.from_xml_path(str(leg["out"] / "model_scaled.xml")).body_mass.sum() == pytest.approx(LEG_MASS)


def _measurement(name, pairs, bodies):
    pair_xml = "".join(f"<MarkerPair><markers>{a} {b}</markers></MarkerPair>" for a, b in pairs)
    body_xml = "".join(f"<BodyScale name='{b}'><axes>{axes}</axes></BodyScale>" for b, axes in bodies)
    return (f"<Measurement name='{name}'><apply>true</apply><MarkerPairSet><objects>{pair_xml}</objects></MarkerPairSet>"
            f"<BodyScaleSet><objects>{body_xml}</objects></BodyScaleSet></Measurement>")


def test_scaling_by_the_setups_measurements_and_marker_placement_is_opensims_scale_tool(leg, tmp_path):
    """``--scaling setup``: a MeasurementSet (two pairs averaged; a body named twice, the later
    measurement winning), a manual Scale applied after it, and the MarkerPlacer on the static
    trial, against OpenSim's ScaleTool on the same files: the same scale factors (the foot's per
    axis) and joint frames; our markers are placed at
    the pose of OpenSim's InverseKinematicsTool on ScaleTool's scaled model and the averaged static
    frame, within 2 mm of where ScaleTool's MarkerPlacer puts them (its pose stops ~0.5° short of
    that optimum)."""
    folder, names = leg["folder"], [n for n in leg["model"].marker_names() if n != "KNE_MED"]
    measurements = "".join([
        _measurement("pelvis", [("RASI", "LASI"), ("RASI", "SACR")], [("pelvis", "X Y Z")]),
        _measurement("thigh", [("RASI", "KNE")], [("femur", "X Y Z"), ("patella", "X Y Z")]),
        _measurement("thigh_again", [("THI1", "KNE")], [("femur", "X Y Z")]),
        _measurement("shank", [("KNE", "ANK"), ("TIB1", "TIB2")], [("tibia", "X Y Z")]),
        _measurement("foot", [("HEE", "MT1")], [("foot", "X Y Z"), ("toes", "X Y Z")]),
        _measurement("foot_width", [("MT5", "MT1")], [("foot", "Z")]),  # one axis: the foot scaled per axis
    ])
    tasks = "".join(f"<IKMarkerTask name='{n}'><apply>true</apply><weight>{2.0 if n in LEG_FIXED else 1.0}</weight>"
                    "</IKMarkerTask>" for n in names)
    setup = tmp_path / "Setup_Scale.xml"
    setup.write_text(f"""<?xml version="1.0"?><OpenSimDocument Version="40000"><ScaleTool name="s">
      <mass>{LEG_MASS}</mass><GenericModelMaker><model_file>{folder / 'leg.osim'}</model_file></GenericModelMaker>
      <ModelScaler><apply>true</apply><scaling_order> measurements manualScale</scaling_order>
      <MeasurementSet><objects>{measurements}</objects></MeasurementSet>
      <ScaleSet><objects><Scale><scales>1.02 1.02 1.02</scales><segment>toes</segment><apply>true</apply></Scale>
      </objects></ScaleSet><marker_file>static.trc</marker_file><time_range>0 1</time_range>
      <preserve_mass_distribution>true</preserve_mass_distribution>
      <output_scale_file>opensim_scales.xml</output_scale_file><output_model_file>scaled_only.osim</output_model_file>
      </ModelScaler>
      <MarkerPlacer><apply>true</apply><IKTaskSet><objects>{tasks}</objects></IKTaskSet>
      <marker_file>static.trc</marker_file><time_range>0 1</time_range>
      <output_model_file>opensim.osim</output_model_file></MarkerPlacer></ScaleTool></OpenSimDocument>""")
    shutil.copy(leg["files"]["static"], tmp_path / "static.trc")
    with contextlib.chdir(tmp_path):  # ScaleTool puts the setup's folder before every file name
        assert osim.ScaleTool(str(setup)).run()
    out = tmp_path / "ours"
    assert cli.main(["scale", str(folder / "leg.osim"), "--setup", str(setup), "--scaling", "setup", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())

    applied = osim.ScaleSet(str(tmp_path / "opensim_scales.xml"))
    theirs = {applied.get(i).getSegmentName(): [applied.get(i).getScaleFactors().get(k) for k in range(3)]
              for i in range(applied.getSize())}
    for body in ("pelvis", "femur", "patella", "tibia", "foot", "toes"):
        # OpenSim writes its scale file with 6 significant digits; the joint frames below are exact.
        assert [float(f"{v:.6g}") for v in report["scales"]["bodies"][body]] == theirs[body], body
    assert theirs["femur"][0] != theirs["patella"][0]  # the later measurement took effect
    assert theirs["foot"][2] != theirs["foot"][0]  # per axis
    np.testing.assert_allclose(theirs["toes"], [1.02, 1.02, 1.02])

    theirs, ours = osim.Model(str(tmp_path / "opensim.osim")), osim.Model(str(out / "model_scaled.osim"))
    for body in ("pelvis", "femur", "patella", "tibia", "foot", "toes"):  # the foot's inertia by OpenSim's cylinder rule
        a, b = theirs.getBodySet().get(body), ours.getBodySet().get(body)
        assert b.getMass() == pytest.approx(a.getMass(), rel=1e-10), body
        np.testing.assert_allclose([b.getInertia().getMoments().get(k) for k in range(3)],
                                   [a.getInertia().getMoments().get(k) for k in range(3)], rtol=1e-10, err_msg=body)
    for j in range(theirs.getJointSet().getSize()):
        a, b = theirs.getJointSet().get(j), ours.getJointSet().get(theirs.getJointSet().get(j).getName())
        for frame in (lambda joint: joint.get_frames(0), lambda joint: joint.get_frames(1)):
            np.testing.assert_allclose([frame(b).get_translation().get(k) for k in range(3)],
                                       [frame(a).get_translation().get(k) for k in range(3)], rtol=1e-12, atol=1e-15)
    for name in names:
        a, b = theirs.getMarkerSet().get(name), ours.getMarkerSet().get(name)
        assert a.getParentFrameName() == b.getParentFrameName()
        gap = np.linalg.norm([a.get_location().get(k) - b.get_location().get(k) for k in range(3)])
        assert gap <= 2e-3, (name, gap)
    assert report["objective"] is None and set(report["scales"]["fitted"]) == set()

    # The averaged static frame (OpenSim's own .trc reader), IK'd by OpenSim on its scaled model.
    table = osim.TimeSeriesTableVec3(str(tmp_path / "static.trc"))
    labels = list(table.getColumnLabels())
    frames = np.array([[[table.getRowAtIndex(i)[k].get(j) for j in range(3)] for k in range(len(labels))]
                       for i in range(table.getNumRows())]) / 1000.0  # mm
    average = dict(zip(labels, np.nanmean(frames, axis=0)))
    averaged = tmp_path / "averaged.trc"
    trc.write_trc(averaged, np.array([0.0, 0.01]), labels, np.repeat(np.stack(list(average.values()))[None], 2, axis=0),
                  units="m")
    tool = osim.InverseKinematicsTool()
    tool.setName("averaged")
    tool.set_model_file(str(tmp_path / "scaled_only.osim"))
    tool.setMarkerDataFileName(str(averaged))
    tool.set_accuracy(1e-8)
    tool.setStartTime(0.0)
    tool.setEndTime(0.01)
    tool.setResultsDir(str(tmp_path))
    tool.setOutputMotionFileName(str(tmp_path / "averaged.mot"))
    for name in names:
        task = osim.IKMarkerTask()
        task.setName(name)
        task.setWeight(2.0 if name in LEG_FIXED else 1.0)
        tool.getIKTaskSet().cloneAndAppend(task)
    tool.printToXML(str(tmp_path / "Setup_IK_averaged.xml"))
    assert osim.InverseKinematicsTool(str(tmp_path / "Setup_IK_averaged.xml")).run()
    pose = mot.read_mot(tmp_path / "averaged.mot")
    state = ours.initSystem()
    for i in range(ours.getCoordinateSet().getSize()):
        c = ours.getCoordinateSet().get(i)
        if not c.getLocked(state) and c.getName() in pose.names:
            value = pose.column(c.getName())[0]
            c.setValue(state, np.radians(value) if c.getMotionType() == 1 else value, False)  # 1: rotational
    ours.assemble(state)
    ours.realizePosition(state)
    for name in names:
        marker = ours.getMarkerSet().get(name)
        if name not in LEG_FIXED:
            where = marker.getLocationInGround(state)
            assert np.linalg.norm([where.get(k) - average[name][k] for k in range(3)]) <= 1e-5, name


# --------------------------------------------------------------------- myolegs
MYOLEGS_MARKERS = {
    "RASI": ("pelvis", (0.02, 0.02, 0.12)), "LASI": ("pelvis", (0.02, 0.02, -0.12)), "SACR": ("pelvis", (-0.17, 0.03, 0.0)),
    "RTHI": ("femur_r", (0.0, -0.2, 0.07)), "RKNE": ("femur_r", (0.0, -0.4, 0.05)), "RTIB": ("tibia_r", (0.0, -0.2, 0.06)),
    "RANK": ("tibia_r", (0.0, -0.39, 0.05)), "RHEE": ("calcn_r", (-0.01, 0.02, 0.0)), "RTOE": ("calcn_r", (0.18, 0.0, 0.0)),
    "LTHI": ("femur_l", (0.0, -0.2, -0.07)), "LKNE": ("femur_l", (0.0, -0.4, -0.05)), "LTIB": ("tibia_l", (0.0, -0.2, -0.06)),
    "LANK": ("tibia_l", (0.0, -0.39, -0.05)), "LHEE": ("calcn_l", (-0.01, 0.02, 0.0)), "LTOE": ("calcn_l", (0.18, 0.0, 0.0)),
}


def _marker_set_xml(path, markers: dict):
    """An OpenSim 3 marker-set file (markers attached by ``<body>``)."""
    objects = "".join(f"<Marker name='{n}'><body>{b}</body><location>{' '.join(map(str, loc))}</location>"
                      "<fixed>false</fixed></Marker>" for n, (b, loc) in markers.items())
    path.write_text(f"<OpenSimDocument Version='30000'><MarkerSet name='m'><objects>{objects}</objects>"
                    "</MarkerSet></OpenSimDocument>")
    return path


def test_myolegs_scaled_from_a_one_frame_static_trial_loads_in_mujoco_with_working_muscles(myolegs, tmp_path):
    markers = _marker_set_xml(tmp_path / "markers.xml", MYOLEGS_MARKERS)
    placements = opensim_setup.read_marker_set(markers)
    model = marker_sets.attach_markers(myolegs, placements, str(markers))
    names = model.marker_names(marker_sets.MARKER_SET)
    assert set(names) == set(MYOLEGS_MARKERS)
    person = model.scale_params(overall=1.05)
    pose = model.neutral_coordinates()[None]
    points = _markers(model, pose, person, marker_sets.MARKER_SET)
    static = trc.write_trc(tmp_path / "static.trc", np.zeros(1), names, points, units="m", z_up_input=True,
                           data_rate=RATE)
    out = tmp_path / "out"
    assert cli.main(["scale", "myo_sim:myolegs", "--static", str(static), "--markers", str(markers), "--mass", "70",
                     "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["trials"]["static"]["frames"] == 1 and report["trials"]["static"]["marker_rms_m"] < 0.003
    assert "free joint" in report["outputs"]["osim_not_written"]  # .osim export refuses myolegs's free root
    scaled = mujoco.MjModel.from_xml_path(str(out / "model_scaled.xml"))
    assert scaled.nu == myolegs.mj_model.nu > 0 and scaled.body_mass.sum() == pytest.approx(70.0)
    data = mujoco.MjData(scaled)
    data.ctrl[:] = 1.0
    for _ in range(20):
        mujoco.mj_step(scaled, data)
    assert np.all(np.isfinite(data.qpos)) and np.count_nonzero(data.actuator_force) == scaled.nu


# --------------------------------------------------------------------- bad input
def test_a_model_without_markers_and_no_marker_set_is_a_clear_error(tmp_path, capsys):
    model = tmp_path / "bare.xml"
    model.write_text("<mujoco><worldbody><body name='b'><freejoint/><geom size='0.1'/></body></worldbody></mujoco>")
    static = trc.write_trc(tmp_path / "s.trc", np.zeros(1), ["A", "B", "C"], np.eye(3)[None], units="m", data_rate=RATE)
    assert cli.main(["scale", str(model), "--static", str(static), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "bare.xml" in err and "no markers" in err and "--markers" in err


def test_a_marker_set_naming_a_body_the_model_lacks_is_an_error_naming_file_and_marker(tmp_path):
    markers = _marker_set_xml(tmp_path / "markers.xml", {"RCLAV": ("clavicle_r", (0.0, 0.0, 0.0))})
    model = mjx_biomech.load_model()
    with pytest.raises(InputError, match=r"markers\.xml.*RCLAV.*clavicle_r"):
        marker_sets.attach_markers(model, opensim_setup.read_marker_set(markers), str(markers))


def test_scale_setup_reader_reads_an_opensim3_setup(tmp_path):
    setup = tmp_path / "Setup_Scale.xml"
    setup.write_text("""<?xml version="1.0"?><OpenSimDocument Version="30000"><ScaleTool name="subject">
      <mass> 72.6 </mass><GenericModelMaker><model_file> generic.osim </model_file>
      <marker_set_file> markers.xml </marker_set_file></GenericModelMaker>
      <ModelScaler><preserve_mass_distribution> true </preserve_mass_distribution>
      <marker_file> static.trc </marker_file><time_range> 1 2 </time_range></ModelScaler>
      <MarkerPlacer><IKTaskSet><objects><IKMarkerTask name="R.ASIS"><apply>true</apply><weight>1000</weight>
      </IKMarkerTask><IKCoordinateTask name="lumbar_extension"><weight>1000</weight><value_type>manual_value</value_type>
      <value>0</value></IKCoordinateTask></objects></IKTaskSet><output_model_file> out.osim </output_model_file>
      </MarkerPlacer></ScaleTool></OpenSimDocument>""")
    s = opensim_setup.read_scale_setup(setup)
    assert (s.name, s.mass, s.time_range, s.preserve_mass_distribution) == ("subject", 72.6, (1.0, 2.0), True)
    assert s.model_file == tmp_path / "generic.osim" and s.marker_set_file == tmp_path / "markers.xml"
    assert s.marker_file == tmp_path / "static.trc" and s.output_model_file == "out.osim"
    assert s.marker_tasks[0].weight == 1000.0 and s.coordinate_tasks[0].value_type == "manual_value"
    with pytest.raises(InputError, match="no <ScaleTool>"):
        opensim_setup.read_scale_setup(_marker_set_xml(tmp_path / "m.xml", {}))
