"""``mjx-biomech batch``: a study file of subjects, each fitted as one Ray task, resumable.

- The study file: defaults per kind, subject options that are the subcommands' own, paths relative
  to the file; a malformed entry is an InputError naming the file and the subject.
- Resuming: a subject's digest follows its input files' contents and its settings, not where the
  study lies; a subject counts as finished only with its manifest and every output it lists.
- On local Ray with 2 workers (slow): 2 markerless and 2 marker-based people of a small legs
  model (tests/study_data.py), one given a calibration without its keypoints' cameras. Three
  finish and one fails with its error in summary.csv (exit status 1); a rerun skips the three; a
  subject whose run was cut short (no manifest) is fitted again; and what the batch wrote equals
  what ``mjx-biomech fit`` / ``scale`` (and ``batch --sequential``) write for the same subject.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from converters.mot import read_mot
from mjx_biomech import cli
from mjx_biomech.cli.study import MANIFEST, MARKER_BASED, MARKERLESS, digest, finished, read_study, write_manifest
from mjx_biomech.errors import InputError

# Relative agreement of the same fit run with XLA on one thread and on several (float64; the runs
# differ by 1e-13 at most).
ROUND_OFF = 1e-9

STUDY = """
[markerless]
marker_set = "blazepose33"
steps = 50

[marker_based]
model = "models/leg.osim"
marker_sigma = 0.002

[[subject]]
name = "s01"
calibration = "s01/calibration.toml"
keypoints = ["s01/walk1.npz", "s01/walk2.npz"]
steps = 70
no-bundle-adjust = true
holdout_camera = ["cam3"]

[[subject]]
name = "s02"
static = "s02/static.trc"
trials = ["s02/walk.trc"]
mass = 72.5
time_range = [0.5, 1.5]
preserve_mass_distribution = false
"""


def _write(folder: Path, text: str = STUDY) -> Path:
    """The study ``text`` in ``folder``, with a small file at each input path it names."""
    for name in ("s01/calibration.toml", "s01/walk1.npz", "s01/walk2.npz", "s02/static.trc", "s02/walk.trc",
                 "models/leg.osim"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(f"contents of {name}")
    path = folder / "study.toml"
    path.write_text(text)
    return path


def test_study_subjects_get_their_kinds_defaults_and_own_options_with_paths_from_the_study_folder(tmp_path):
    study = read_study(_write(tmp_path))
    s01, s02 = study.subjects
    assert (s01.name, s01.kind, s02.name, s02.kind) == ("s01", MARKERLESS, "s02", MARKER_BASED)
    a = s01.args
    assert a.marker_set == "blazepose33" and a.steps == 70 and a.no_bundle_adjust and a.holdout_camera == ["cam3"]
    assert a.calibration == str(tmp_path / "s01/calibration.toml")
    assert a.keypoints == [str(tmp_path / "s01/walk1.npz"), str(tmp_path / "s01/walk2.npz")]
    assert a.model is None and a.out is None and not a.free_left_right  # the fit command's defaults
    b = s02.args
    assert b.model == str(tmp_path / "models/leg.osim") and b.static == str(tmp_path / "s02/static.trc")
    assert b.mass == 72.5 and b.time_range == [0.5, 1.5] and b.preserve_mass_distribution is False
    assert b.marker_sigma == 0.002 and b.scaling == "fit"
    assert s01.with_out(tmp_path / "o").out == str(tmp_path / "o") and s01.args.out is None


@pytest.mark.parametrize("change, entry, expected", [
    (("steps = 70", 'steps = "many"'), "subject 's01'", "argument --steps: invalid int value: 'many'"),
    (("mass = 72.5", "mass = [72.5]"), "subject 's02'", "option 'mass' takes one value, got a list"),
    (("mass = 72.5", "weight = 72.5"), "subject 's02'", "unknown option 'weight'"),
    (("mass = 72.5", 'out = "elsewhere"'), "subject 's02'", "unknown option 'out'"),
    (("no-bundle-adjust = true", 'no-bundle-adjust = "yes"'), "subject 's01'", "option 'no-bundle-adjust' is a switch"),
    (('static = "s02/static.trc"', 'keypoints = ["s02/k.npz"]\nstatic = "s02/static.trc"'), "subject 's02'", "not both"),
    (('calibration = "s01/calibration.toml"', ""), "subject 's01'", "the following arguments are required: --calibration"),
    (('name = "s02"', 'name = "s01"'), "subject 's01'", "a second subject of that name"),
    (('name = "s02"', 'name = "../s02"'), "subject '../s02'", "needs a name of letters"),
    (('name = "s02"', ""), "subject #2", "needs a name"),
    (("[marker_based]", "[marker_base]"), "", "unknown table(s) marker_base"),
    (('trials = ["s02/walk.trc"]', 'trials = ["s02/walk.trc"'), "", "not valid TOML"),
])
def test_a_malformed_study_is_an_input_error_naming_the_file_and_the_subject(tmp_path, change, entry, expected):
    path = _write(tmp_path, STUDY.replace(*change, 1))
    with pytest.raises(InputError) as e:
        read_study(path)
    assert str(e.value).startswith(f"{path}: {entry}") and expected in str(e.value)


def test_digest_follows_input_contents_and_resolved_settings_not_the_study_location(tmp_path):
    def read(folder):
        return {s.name: digest(s) for s in read_study(folder / "study.toml").subjects}

    first = tmp_path / "a"
    _write(first)
    before = read(first)
    moved = shutil.copytree(first, tmp_path / "b")
    assert read(moved) == before
    (moved / "s02" / "walk.trc").write_text("another walk")
    after = read(moved)
    assert after["s01"] == before["s01"] and after["s02"] != before["s02"]
    # Writing out a default changes nothing; changing a setting changes the subject's digest.
    (first / "study.toml").write_text(STUDY.replace("mass = 72.5", "mass = 72.5\nscaling = \"fit\""))
    assert read(first) == before
    (first / "study.toml").write_text(STUDY.replace("steps = 70", "steps = 71"))
    assert read(first)["s01"] != before["s01"] and read(first)["s02"] == before["s02"]
    (first / "s01" / "walk2.npz").unlink()
    with pytest.raises(OSError):
        read(first)


def test_a_subject_is_finished_only_with_a_matching_manifest_and_every_output_it_lists(tmp_path):
    (subject, _) = read_study(_write(tmp_path)).subjects
    folder = tmp_path / "out" / "s01"
    (folder / "plots").mkdir(parents=True)
    for name in ("walk1.mot", "plots/gc_curve.png"):
        (folder / name).write_text("output")
    key = digest(subject)
    assert finished(folder, key) is None
    manifest = write_manifest(folder, subject, key, {"seconds": 1.0, "scales": {}, "rows": []})
    assert manifest["outputs"] == ["plots/gc_curve.png", "walk1.mot"]
    assert finished(folder, key) == manifest
    assert finished(folder, "another digest") is None
    (folder / "plots/gc_curve.png").unlink()
    assert finished(folder, key) is None


def test_batch_command_reports_a_bad_study_or_contradicting_options_on_one_line(tmp_path, capsys):
    path = _write(tmp_path, STUDY.replace("mass = 72.5", "weight = 72.5"))
    assert cli.main(["batch", str(path), "--out", str(tmp_path / "o"), "--sequential"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mjx-biomech batch: error:") and "unknown option 'weight'" in err and "\n" not in err
    path = _write(tmp_path)
    assert cli.main(["batch", str(path), "--out", str(tmp_path / "o"), "--sequential", "--workers", "2"]) == 2
    assert "--sequential runs without Ray" in capsys.readouterr().err


# ----------------------------------------------------------------------------- a study on Ray
def _summary(folder: Path) -> list[dict]:
    with open(folder / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


def _status(rows) -> dict:
    return {r["subject"]: r["status"] for r in rows}


def _same_outputs(a: Path, b: Path, trials) -> None:
    """The two fits' motions (every .mot value) and reports' scales agree to float64 round-off: a
    Ray worker's XLA runs on one thread, this process's on every core, and sums in another order."""
    for trial in trials:
        ma, mb = read_mot(a / f"{trial}.mot"), read_mot(b / f"{trial}.mot")
        assert ma.names == mb.names and ma.values.shape == mb.values.shape
        np.testing.assert_allclose(ma.values, mb.values, rtol=ROUND_OFF, atol=ROUND_OFF, err_msg=f"{a.name}/{trial}.mot")
    ra, rb = (json.loads((f / "report.json").read_text()) for f in (a, b))
    scales = (lambda r: r["scale_params"]) if "scale_params" in ra else (lambda r: r["scales"]["parameters"])
    assert scales(ra) == pytest.approx(scales(rb), rel=ROUND_OFF)


# Ray starts its processes with fork + exec while JAX's threads run; JAX warns of a fork.
FORK_WARNING = pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called")


@pytest.fixture(scope="module")
def study_on_ray(tmp_path_factory):
    pytest.importorskip("ray", reason="ray (the [batch] extra) runs the study's subjects")
    from study_data import write_study

    folder = tmp_path_factory.mktemp("study")
    path = write_study(folder, markerless=2, marker_based=2, frames=6, steps=8, broken="m2")
    out = folder / "out"
    code = cli.main(["batch", str(path), "--out", str(out), "--workers", "2"])
    return {"folder": folder, "study": path, "out": out, "code": code, "summary": _summary(out),
            "manifests": {s: (out / s / MANIFEST).stat().st_mtime_ns for s in ("m1", "k1", "k2")}}


@pytest.mark.slow
@FORK_WARNING
def test_on_ray_three_subjects_finish_and_the_broken_one_fails_with_its_error_in_the_summary(study_on_ray):
    rows, out = study_on_ray["summary"], study_on_ray["out"]
    assert study_on_ray["code"] == 1
    assert _status(rows) == {"m1": "ok", "m2": "failed", "k1": "ok", "k2": "ok"}
    (broken,) = [r for r in rows if r["subject"] == "m2"]
    assert "camera(s) cam5 not in the calibration" in broken["error"] and "\n" not in broken["error"]
    assert "Traceback" in (out / "m2" / "error.txt").read_text()
    m1 = [r for r in rows if r["subject"] == "m1"]
    assert [r["trial"] for r in m1] == ["walk"] and 0 <= float(m1[0]["gc10"]) <= 1 and m1[0]["marker_rms_mm"] == ""
    k1 = [r for r in rows if r["subject"] == "k1"]
    assert [r["trial"] for r in k1] == ["static", "walk"] and all(0 < float(r["marker_rms_mm"]) < 10 for r in k1)
    report = json.loads((out / "k1" / "report.json").read_text())
    assert float(k1[0]["scale_thigh_r"]) == pytest.approx(report["scales"]["parameters"]["thigh_r"], abs=1e-5)
    assert all(float(r["seconds"]) > 0 for r in rows if r["status"] == "ok")


@pytest.mark.slow
@FORK_WARNING
def test_a_rerun_skips_the_finished_subjects_and_redoes_one_cut_short(study_on_ray, capsys):
    out, study = study_on_ray["out"], study_on_ray["study"]
    assert cli.main(["batch", str(study), "--out", str(out), "--workers", "2"]) == 1
    rows = _summary(out)
    assert _status(rows) == {"m1": "skipped", "m2": "failed", "k1": "skipped", "k2": "skipped"}
    assert {s: (out / s / MANIFEST).stat().st_mtime_ns for s in ("m1", "k1", "k2")} == study_on_ray["manifests"]
    # The finished subjects' rows are those of the first run, their times included.
    first = [dict(r, status="skipped") for r in study_on_ray["summary"] if r["status"] == "ok"]
    assert [r for r in rows if r["status"] == "skipped"] == first
    # k2 was cut short: its outputs, not its manifest (the last file written). Only k2 runs again,
    # here in this process, and writes what the Ray worker wrote.
    ray_run = shutil.copytree(out / "k2", study_on_ray["folder"] / "k2_on_ray")
    (out / "k2" / MANIFEST).unlink()
    capsys.readouterr()
    assert cli.main(["batch", str(study), "--out", str(out), "--sequential"]) == 1
    assert "k2: done" in capsys.readouterr().out
    assert _status(_summary(out)) == {"m1": "skipped", "m2": "failed", "k1": "skipped", "k2": "ok"}
    _same_outputs(out / "k2", ray_run, ["walk", "static"])


@pytest.mark.slow
@FORK_WARNING
def test_a_subject_fitted_on_ray_equals_the_same_fit_by_mjx_biomech_fit(study_on_ray):
    (m1,) = [s for s in read_study(study_on_ray["study"]).subjects if s.name == "m1"]
    alone = study_on_ray["folder"] / "m1_alone"
    assert cli.main(["fit", *m1.argv, "--out", str(alone)]) == 0
    _same_outputs(study_on_ray["out"] / "m1", alone, ["walk"])
