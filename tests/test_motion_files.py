"""Motion files (.mot/.sto, .trc): our writers against OpenSim 4.6's readers and the reverse."""

from __future__ import annotations

import re

import numpy as np
import pytest

from converters.mot import MotionTable, read_mot, read_mot_internal, write_mot, write_sto
from converters.opensim_frame import GROUND_QUAT, GROUND_TO_WORLD, y_up_to_z_up, z_up_to_y_up
from converters.trc import read_trc, write_trc
from mjx_biomech.body.rotations import quat_to_mat_np
from mjx_biomech.errors import InputError

NAMES = ("pelvis_tilt", "pelvis_tx", "hip_flexion_r", "knee_r_beta")
ROTATIONAL = (True, False, True, False)  # knee_r_beta is a coupled coordinate: never converted
TRC_KEYS = "DataRate\tCameraRate\tNumFrames\tNumMarkers\tUnits\tOrigDataRate\tOrigDataStartFrame\tOrigNumFrames"


def _coordinates(frames=7, seed=0):
    """(T,) times at 100 Hz and (T, 4) internal-unit values with awkward binary fractions."""
    rng = np.random.default_rng(seed)
    times = np.arange(frames) / 100.0 + 1.0 / 3.0
    values = rng.normal(size=(frames, len(NAMES))) * np.array([0.3, 0.8, 1.1, 0.5])
    return times, values


def _markers(frames=5, markers=3, seed=1):
    """(T,) times at 120 Hz and (T, M, 3) positions in metres; marker 1 missing in frame 2."""
    rng = np.random.default_rng(seed)
    times = np.arange(frames) / 120.0
    positions = rng.normal(size=(frames, markers, 3))
    positions[2, 1] = np.nan
    return times, tuple(f"M{k}" for k in range(markers)), positions


def _storage_rows(storage):
    """(T, 1 + N) time and values of an opensim.Storage, as OpenSim read them."""
    rows = []
    for i in range(storage.getSize()):
        vector = storage.getStateVector(i)
        data = vector.getData()
        rows.append([vector.getTime()] + [data.get(j) for j in range(vector.getSize())])
    return np.array(rows)


def _vec3_table_positions(table):
    """(T, M, 3) positions of an opensim.TimeSeriesTableVec3, in the file's units."""
    out = np.empty((table.getNumRows(), table.getNumColumns(), 3))
    for i in range(table.getNumRows()):
        row = table.getRowAtIndex(i)
        for j in range(row.size()):
            out[i, j] = [row[j][0], row[j][1], row[j][2]]
    return out


# ---------------------------------------------------------------- .mot / .sto


def test_mot_round_trip_converts_only_rotational_columns_to_degrees(tmp_path):
    times, values = _coordinates()
    path = write_mot(tmp_path / "walk.mot", times, NAMES, values, {"pelvis_tilt", "hip_flexion_r"})

    table = read_mot(path)
    assert table.names == NAMES
    assert table.in_degrees
    np.testing.assert_array_equal(table.times, times)
    mask = np.array(ROTATIONAL)
    np.testing.assert_array_equal(table.values[:, ~mask], values[:, ~mask])
    np.testing.assert_allclose(table.values[:, mask], np.rad2deg(values[:, mask]), rtol=1e-15)

    internal = read_mot_internal(path, ROTATIONAL)
    assert not internal.in_degrees
    np.testing.assert_array_equal(internal.values[:, ~mask], values[:, ~mask])
    np.testing.assert_allclose(internal.values, values, rtol=1e-12, atol=0)

    lines = path.read_text().splitlines()
    assert lines[:6] == ["walk", "version=1", "nRows=7", "nColumns=5", "inDegrees=yes", "endheader"]
    assert lines[6].split("\t") == ["time", *NAMES]
    first_row = [float(c) for c in lines[7].split("\t")]
    assert first_row[2] == values[0, 1]  # pelvis_tx in metres, unchanged
    assert first_row[4] == values[0, 3]  # coupled coordinate, unchanged
    assert first_row[3] == pytest.approx(np.rad2deg(values[0, 2]), rel=1e-15)  # hip flexion in degrees
    assert abs(first_row[3] - values[0, 2]) > 1e-3

    # A boolean mask names the same columns as the set of names.
    write_mot(tmp_path / "mask.mot", times, NAMES, values, ROTATIONAL, name="walk")
    assert (tmp_path / "mask.mot").read_text() == path.read_text()


def test_mot_in_radians_writes_internal_values_unchanged(tmp_path):
    times, values = _coordinates()
    path = write_mot(tmp_path / "rad.mot", times, NAMES, values, ROTATIONAL, in_degrees=False)
    table = read_mot(path)
    assert not table.in_degrees
    np.testing.assert_array_equal(table.values, values)
    assert table.to_internal(ROTATIONAL) is table


def test_opensim_reads_our_mot_and_sto(tmp_path):
    osim = pytest.importorskip("opensim")
    times, values = _coordinates()
    for path, in_degrees in (
        (write_mot(tmp_path / "ours.mot", times, NAMES, values, ROTATIONAL), True),
        (write_sto(tmp_path / "ours.sto", times, NAMES, values, ROTATIONAL), False),
    ):
        ours = read_mot(path)
        assert ours.in_degrees is in_degrees

        table = osim.TimeSeriesTable(str(path))
        assert tuple(table.getColumnLabels()) == NAMES
        assert table.getNumRows() == len(times)
        assert table.getTableMetaDataAsString("inDegrees") == ("yes" if in_degrees else "no")
        np.testing.assert_allclose(np.array(table.getIndependentColumn()), times, rtol=1e-15, atol=0)
        np.testing.assert_allclose(table.getMatrix().to_numpy(), ours.values, rtol=1e-15, atol=0)

        storage = osim.Storage(str(path))
        labels = storage.getColumnLabels()
        assert tuple(labels.get(i) for i in range(labels.getSize())) == ("time", *NAMES)
        assert storage.isInDegrees() is in_degrees
        np.testing.assert_allclose(
            _storage_rows(storage), np.column_stack([times, ours.values]), rtol=1e-15, atol=0
        )


def test_we_read_sto_written_by_opensim_table_adapter(tmp_path):
    osim = pytest.importorskip("opensim")
    times, values = _coordinates()
    table = osim.TimeSeriesTable()
    table.setColumnLabels(list(NAMES))
    for t, row in zip(times, values):
        table.appendRow(float(t), osim.RowVector(row.tolist()))
    table.addTableMetaDataString("inDegrees", "no")
    path = tmp_path / "opensim.sto"
    osim.STOFileAdapter.write(table, str(path))

    ours = read_mot(path)
    assert ours.names == NAMES
    assert not ours.in_degrees
    assert ours.metadata["DataType"] == "double"
    np.testing.assert_allclose(ours.times, times, rtol=1e-15, atol=0)
    np.testing.assert_allclose(ours.values, values, rtol=1e-15, atol=0)


def test_we_read_mot_printed_by_opensim_storage(tmp_path):
    osim = pytest.importorskip("opensim")
    times, values = _coordinates()
    degrees = np.where(np.array(ROTATIONAL), np.rad2deg(values), values)
    source = write_mot(tmp_path / "source.mot", times, NAMES, values, ROTATIONAL)
    storage = osim.Storage(str(source))
    storage.setName("printed")
    path = tmp_path / "printed.mot"
    assert storage.printToFile(str(path), "w", "")

    ours = read_mot(path)
    assert ours.metadata["name"] == "printed"
    assert ours.in_degrees
    assert ours.names == NAMES
    reread = _storage_rows(osim.Storage(str(path)))
    np.testing.assert_array_equal(ours.times, reread[:, 0])
    np.testing.assert_array_equal(ours.values, reread[:, 1:])
    # Storage prints 8 decimals.
    np.testing.assert_allclose(ours.values, degrees, rtol=0, atol=5e-9)
    np.testing.assert_allclose(ours.to_internal(ROTATIONAL).values, values, rtol=0, atol=5e-9)


def test_simm_style_mot_with_description_and_spaces_reads_as_opensim_storage_does(tmp_path):
    osim = pytest.importorskip("opensim")
    path = tmp_path / "simm.mot"
    path.write_text(
        "Coordinates\nversion=1\nnRows=3\nnColumns=3\ninDegrees=yes\n\n"
        "Units are S.I. units (second, meters, Newtons, ...)\nAngles are in degrees.\n\nendheader\n"
        "time        hip_flexion_r   pelvis_tx\n"
        "  0.00000000   1.50000000  -0.25\n  0.01000000   2.5e1   0.125\n\n  0.02000000  -3.0   1.0\n"
    )
    ours = read_mot(path)
    storage = osim.Storage(str(path))
    assert ours.names == ("hip_flexion_r", "pelvis_tx")
    assert ours.in_degrees is storage.isInDegrees()
    assert ours.metadata["name"] == "Coordinates"
    assert "Angles are in degrees." in ours.metadata["description"]
    np.testing.assert_array_equal(np.column_stack([ours.times, ours.values]), _storage_rows(storage))


def _mot_text(rows, header="version=1\nnRows={n}\nnColumns=3\ninDegrees=yes\nendheader\n"):
    body = "".join("\t".join(r) + "\n" for r in rows)
    return "bad\n" + header.format(n=len(rows)) + "time\tknee_angle_r\tpelvis_tx\n" + body


def test_mot_without_endheader_is_rejected_naming_the_file(tmp_path):
    path = tmp_path / "noend.mot"
    path.write_text("noend\nversion=1\ninDegrees=yes\ntime\tknee_angle_r\n0\t1\n")
    with pytest.raises(InputError, match=r"noend\.mot.*endheader"):
        read_mot(path)


def test_mot_errors_name_file_and_line(tmp_path):
    path = tmp_path / "bad.mot"
    cases = [
        ([["0", "1", "2"], ["0.01", "1", "2", "3"]], r"line 9\b.*4 values; expected 3"),
        ([["0", "1", "2"], ["0.01", "abc", "2"]], r"line 9, column 'knee_angle_r': 'abc' is not a number"),
        ([["0", "1", "2"], ["0", "1", "2"]], r"line 9: time 0\.0 follows time 0\.0 \(line 8\)"),
        ([["0.02", "1", "2"], ["0.01", "1", "2"]], r"line 9: time 0\.01 follows time 0\.02"),
    ]
    for rows, message in cases:
        path.write_text(_mot_text(rows))
        with pytest.raises(InputError, match=re.escape(str(path)) + r".*" + message):
            read_mot(path)

    path.write_text(_mot_text([["0", "1", "2"]], header="version=1\nnRows=2\nnColumns=3\nendheader\n"))
    with pytest.raises(InputError, match=re.escape(str(path)) + r".*nRows=2 but the file has 1 data rows"):
        read_mot(path)
    path.write_text(_mot_text([["0", "1", "2"]], header="version=1\nnRows=1\nnColumns=4\nendheader\n"))
    with pytest.raises(InputError, match=r"nColumns=4 but the file has 3 column labels"):
        read_mot(path)


def test_mot_infinite_values_and_nan_times_are_refused_naming_line_and_column(tmp_path):
    path = tmp_path / "bad.mot"
    cases = [
        ([["0", "1", "2"], ["0.01", "inf", "2"]], r"line 9, column 'knee_angle_r': 'inf' is not a finite number"),
        ([["0", "1", "2"], ["0.01", "1", "-Infinity"]], r"line 9, column 'pelvis_tx': '-Infinity' is not a finite"),
        ([["0", "1", "2"], ["nan", "1", "2"]], r"line 9, column 'time': 'nan' is not a time"),
        ([["0", "1", "2"], ["inf", "1", "2"]], r"line 9, column 'time': 'inf' is not a finite number"),
    ]
    for rows, message in cases:
        path.write_text(_mot_text(rows))
        with pytest.raises(InputError, match=re.escape(str(path)) + r".*" + message):
            read_mot(path)
    path.write_text(_mot_text([["0", "nan", "2"]], header="version=1\nnRows=1\nnColumns=3\nendheader\n"))
    assert np.isnan(read_mot(path).values[0, 0])  # a missing value, as OpenSim writes it


def test_mot_repeated_labels_keep_every_column_distinct_by_suffix_with_a_warning(tmp_path):
    # OpenSim's own IK reference output repeats its ground-reaction labels, once per foot.
    path = tmp_path / "repeated.mot"
    path.write_text("ik\nnRows=2\nnColumns=6\nendheader\n"
                    "time\tforce_vx\tforce_vx_2\tforce_vx\tknee\tforce_vx\n"
                    "0.0\t1\t2\t3\t4\t5\n0.1\t6\t7\t8\t9\t10\n")
    with pytest.warns(UserWarning, match=r"repeated\.mot, line 5: repeated column labels renamed "
                                          r"\(force_vx -> force_vx_3, force_vx -> force_vx_4\)"):
        table = read_mot(path)
    assert table.names == ("force_vx", "force_vx_2", "force_vx_3", "knee", "force_vx_4")
    np.testing.assert_array_equal(table.values, [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]])
    np.testing.assert_array_equal(table.column("force_vx"), [1, 6])  # the first, as OpenSim's Storage
    osim = pytest.importorskip("opensim")
    np.testing.assert_array_equal(np.column_stack([table.times, table.values]), _storage_rows(osim.Storage(str(path))))


@pytest.mark.slow
def test_opensim_reference_ik_output_reads_with_its_repeated_ground_reaction_labels():
    from pathlib import Path

    path = (Path(__file__).resolve().parents[2] / "shared" / "data" / "opensim-models" / "Pipelines" /
            "Gait2392_Simbody" / "OutputReference" / "subject01_walk1_ik.mot")
    if not path.is_file():
        pytest.skip(f"shared OpenSim models not found at {path.parent}")
    with pytest.warns(UserWarning, match="ground_force_vx -> ground_force_vx_2"):
        table = read_mot(path)
    assert table.values.shape == (211, 164) and len(set(table.names)) == 164
    osim = pytest.importorskip("opensim")
    np.testing.assert_array_equal(np.column_stack([table.times, table.values]), _storage_rows(osim.Storage(str(path))))


def test_write_mot_rejects_times_that_do_not_increase_and_unknown_rotational_names(tmp_path):
    times, values = _coordinates()
    times[3] = times[2]
    with pytest.raises(InputError, match=r"times\[2\].*times\[3\]"):
        write_mot(tmp_path / "dup.mot", times, NAMES, values, ROTATIONAL)
    assert not (tmp_path / "dup.mot").exists()
    times, values = _coordinates()
    with pytest.raises(InputError, match=r"knee_angle_l"):
        write_mot(tmp_path / "x.mot", times, NAMES, values, {"knee_angle_l"})
    with pytest.raises(InputError, match=r"mask of 3 flags for 4 columns"):
        write_mot(tmp_path / "x.mot", times, NAMES, values, [True, False, True])


def test_motion_table_is_immutable():
    table = MotionTable(np.zeros(2), ("a",), np.zeros((2, 1)), True, {})
    with pytest.raises(ValueError):
        table.values[0, 0] = 1.0
    with pytest.raises(ValueError, match=r"\(T, N\)"):
        MotionTable(np.zeros(2), ("a", "b"), np.zeros((2, 1)), True, {})


# ---------------------------------------------------------------- .trc


def test_z_up_mapping_turns_opensim_up_into_mujoco_up():
    # OpenSim: X forward, Y up, Z right. MuJoCo: X forward, Y left, Z up.
    forward, up, right = np.eye(3)
    np.testing.assert_array_equal(y_up_to_z_up([forward, up, right]), [[1, 0, 0], [0, 0, 1], [0, -1, 0]])
    points = np.random.default_rng(2).normal(size=(4, 2, 3))
    np.testing.assert_array_equal(z_up_to_y_up(y_up_to_z_up(points)), points)
    # The same turn as the converters' ground frame (matrix and quaternion).
    np.testing.assert_array_equal(y_up_to_z_up(points), points @ GROUND_TO_WORLD.T)
    np.testing.assert_allclose(quat_to_mat_np(GROUND_QUAT), GROUND_TO_WORLD, rtol=0, atol=1e-15)


@pytest.mark.parametrize("units, scale", [("m", 1.0), ("mm", 1000.0)])
def test_trc_round_trip_keeps_markers_and_missing_values(tmp_path, units, scale):
    times, names, positions = _markers()
    path = write_trc(tmp_path / f"walk_{units}.trc", times, names, positions, units=units)

    data = read_trc(path)
    assert data.marker_names == names
    assert data.units_original == units
    assert data.data_rate == pytest.approx(120.0, rel=1e-12)
    np.testing.assert_array_equal(data.frame_numbers, np.arange(1, len(times) + 1))
    np.testing.assert_array_equal(data.times, times)
    np.testing.assert_array_equal(np.isnan(data.positions), np.isnan(positions))
    np.testing.assert_allclose(data.positions, positions, rtol=1e-12, atol=0)

    lines = path.read_text().splitlines()
    assert lines[1] == TRC_KEYS
    assert lines[2].split("\t") == ["120", "120", "5", "3", units, "120", "1", "5"]
    row = lines[6 + 2].split("\t")  # frame 3: marker M1 missing
    assert row[:2] == ["3", "0.016666666666666666"]
    assert row[5:8] == ["NaN", "NaN", "NaN"]
    assert float(row[2]) == pytest.approx(positions[2, 0, 0] * scale, rel=1e-15)
    assert lines[6].split("\t")[1] == "0.000000"


def test_trc_z_up_round_trip(tmp_path):
    times, names, positions_z_up = _markers()
    path = write_trc(tmp_path / "zup.trc", times, names, positions_z_up, units="mm", z_up_input=True)
    y_up = read_trc(path)
    np.testing.assert_allclose(y_up.positions, z_up_to_y_up(positions_z_up), rtol=1e-12, atol=0)
    z_up = read_trc(path, z_up=True)
    np.testing.assert_allclose(z_up.positions, positions_z_up, rtol=1e-12, atol=0)
    np.testing.assert_array_equal(np.isnan(z_up.positions), np.isnan(positions_z_up))


@pytest.mark.parametrize("units", ["m", "mm"])
def test_opensim_reads_our_trc(tmp_path, units):
    osim = pytest.importorskip("opensim")
    times, names, positions = _markers()
    path = write_trc(tmp_path / "ours.trc", times, names, positions, units=units)
    ours = read_trc(path)

    table = osim.TimeSeriesTableVec3(str(path))
    assert tuple(table.getColumnLabels()) == names
    assert table.getTableMetaDataAsString("Units") == units
    assert float(table.getTableMetaDataAsString("DataRate")) == pytest.approx(ours.data_rate, rel=1e-15)
    np.testing.assert_allclose(np.array(table.getIndependentColumn()), times, rtol=1e-15, atol=0)
    in_file_units = _vec3_table_positions(table)
    np.testing.assert_array_equal(np.isnan(in_file_units), np.isnan(positions))
    scale = {"m": 1.0, "mm": 1000.0}[units]
    np.testing.assert_allclose(in_file_units / scale, ours.positions, rtol=1e-15, atol=0)


def test_we_read_trc_written_by_opensim(tmp_path):
    osim = pytest.importorskip("opensim")
    times, names, positions = _markers()
    millimetres = positions * 1000.0
    table = osim.TimeSeriesTableVec3()
    table.setColumnLabels(list(names))
    for t, frame in zip(times, millimetres):
        row = osim.RowVectorVec3(len(names))
        for j, p in enumerate(frame):
            row[j] = osim.Vec3(*p.tolist())
        table.appendRow(float(t), row)
    for key, value in (("DataRate", "120"), ("CameraRate", "120"), ("Units", "mm")):
        table.addTableMetaDataString(key, value)
    path = tmp_path / "opensim.trc"
    osim.TRCFileAdapter.write(table, str(path))

    ours = read_trc(path)
    assert ours.marker_names == names
    assert ours.units_original == "mm"
    assert ours.data_rate == 120.0
    np.testing.assert_array_equal(ours.frame_numbers, np.arange(1, len(times) + 1))
    np.testing.assert_allclose(ours.times, times, rtol=1e-15, atol=0)
    np.testing.assert_array_equal(np.isnan(ours.positions), np.isnan(positions))
    np.testing.assert_allclose(ours.positions, positions, rtol=1e-15, atol=0)


def test_trc_marker_with_an_empty_cell_is_missing_as_opensim_reads_it(tmp_path):
    osim = pytest.importorskip("opensim")
    path = tmp_path / "holes.trc"
    path.write_text(
        "PathFileType\t4\t(X/Y/Z)\tholes.trc\n"
        f"{TRC_KEYS}\n"
        "100\t100\t2\t2\tmm\t100\t1\t2\n"
        "Frame#\tTime\tA\t\t\tB\t\t\t\n\t\tX1\tY1\tZ1\tX2\tY2\tZ2\t\n\n"
        "1\t0.000000\t1e-05\t2\t3\tnan\tNaN\tNaN\t\n"
        "2\t0.010000\t1\t\t3\t4\t5\t6\t\n"
    )
    ours = read_trc(path)
    opensim_mm = _vec3_table_positions(osim.TimeSeriesTableVec3(str(path)))
    np.testing.assert_array_equal(np.isnan(ours.positions), np.isnan(opensim_mm))
    assert np.isnan(ours.positions[1, 0]).all()
    np.testing.assert_allclose(ours.positions, opensim_mm / 1000.0, rtol=1e-15, atol=0)


def _trc_text(rows, num_markers=2, units="m", labels="A\t\t\tB\t\t"):
    return (
        "PathFileType\t4\t(X/Y/Z)\tbad.trc\n"
        f"{TRC_KEYS}\n"
        f"100\t100\t{len(rows)}\t{num_markers}\t{units}\t100\t1\t{len(rows)}\n"
        f"Frame#\tTime\t{labels}\n\t\tX1\tY1\tZ1\tX2\tY2\tZ2\n\n"
        + "".join("\t".join(r) + "\n" for r in rows)
    )


def test_trc_errors_name_file_and_line(tmp_path):
    path = tmp_path / "bad.trc"
    good = ["1", "0.0", "1", "2", "3", "4", "5", "6"]
    same_time = ["2", "0.0", "1", "2", "3", "4", "5", "6"]
    not_a_number = ["2", "0.01", "1", "x", "3", "4", "5", "6"]
    cases = [
        ([good, ["2", "0.01", "1", "2", "3"]], {}, r"line 8: 5 columns; expected 8"),
        ([good, same_time], {}, r"line 8: time 0\.0 follows time 0\.0 \(line 7\)"),
        ([good, not_a_number], {}, r"line 8, column 'A Y': 'x' is not a number"),
        ([good], {"num_markers": 3}, r"line 4: 2 marker labels but NumMarkers=3"),
        ([good], {"units": "inches"}, r"line 3: Units='inches'"),
    ]
    for rows, options, message in cases:
        path.write_text(_trc_text(rows, **options))
        with pytest.raises(InputError, match=re.escape(str(path)) + r".*" + message):
            read_trc(path)


def test_trc_whose_num_frames_disagrees_with_its_rows_reads_the_rows_as_opensim_does(tmp_path):
    path = tmp_path / "short.trc"
    text = _trc_text([["1", "0.0", "1", "2", "3", "4", "5", "6"], ["2", "0.01", "1", "2", "3", "4", "5", "6"]])
    path.write_text(text.replace("100\t100\t2\t2", "100\t100\t3\t2"))
    with pytest.warns(UserWarning, match=r"short\.trc: NumFrames=3 \(line 3\) but the file has 2 data rows"):
        ours = read_trc(path)
    assert ours.positions.shape == (2, 2, 3)
    osim = pytest.importorskip("opensim")
    assert osim.TimeSeriesTableVec3(str(path)).getNumRows() == 2


def test_trc_frame_numbers_must_be_whole_in_range_and_strictly_increasing(tmp_path):
    path = tmp_path / "bad.trc"
    row = ["0.0", "1", "2", "3", "4", "5", "6"]
    later = ["0.01", "1", "2", "3", "4", "5", "6"]
    cases = [
        ([["1e19", *row]], r"line 7, column 'Frame#': '1e19' is not a whole number from 0 to"),
        ([["-1", *row]], r"line 7, column 'Frame#': '-1' is not a whole number"),
        ([["1.5", *row]], r"line 7, column 'Frame#': '1.5' is not a whole number"),
        ([["2", *row], ["2", *later]], r"line 8, column 'Frame#': frame 2 follows frame 2 \(line 7\)"),
        ([["3", *row], ["2", *later]], r"line 8, column 'Frame#': frame 2 follows frame 3 \(line 7\)"),
    ]
    for rows, message in cases:
        path.write_text(_trc_text(rows))
        with pytest.raises(InputError, match=re.escape(str(path)) + r".*" + message):
            read_trc(path)


def test_trc_infinite_values_and_nan_times_are_refused_but_a_nan_marker_is_a_gap(tmp_path):
    path = tmp_path / "bad.trc"
    for rows, message in [
        ([["1", "0.0", "1", "inf", "3", "4", "5", "6"]], r"line 7, column 'A Y': 'inf' is not a finite number"),
        ([["1", "-inf", "1", "2", "3", "4", "5", "6"]], r"line 7, column 'Time': '-inf' is not a finite number"),
        ([["1", "nan", "1", "2", "3", "4", "5", "6"]], r"line 7, column 'Time': 'nan' is not a finite number"),
    ]:
        path.write_text(_trc_text(rows))
        with pytest.raises(InputError, match=re.escape(str(path)) + r".*" + message):
            read_trc(path)
    path.write_text(_trc_text([["1", "0.0", "1", "2", "3", "NaN", "5", "6"]]))
    positions = read_trc(path).positions
    assert np.isnan(positions[0, 1]).all() and not np.isnan(positions[0, 0]).any()


def test_write_trc_rejects_duplicate_times_and_unknown_units(tmp_path):
    times, names, positions = _markers()
    times[1] = times[0]
    with pytest.raises(InputError, match=r"times\[0\].*times\[1\]"):
        write_trc(tmp_path / "dup.trc", times, names, positions)
    times, names, positions = _markers()
    with pytest.raises(InputError, match=r"units: 'inch'"):
        write_trc(tmp_path / "u.trc", times, names, positions, units="inch")
