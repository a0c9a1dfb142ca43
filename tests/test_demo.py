"""``mjx-biomech demo --quick``: every output of a fit, and a report with the recovered-vs-true errors."""

import json

import pytest

from converters.mot import read_mot
from converters.trc import read_trc
from mjx_biomech import cli


@pytest.mark.slow
def test_quick_demo_writes_every_output_and_its_report(tmp_path, capsys):
    out = tmp_path / "demo"
    (out / "plots").mkdir(parents=True)
    (out / "notes.txt").write_text("an earlier file")
    assert cli.main(["demo", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "recovered vs true" in printed and "GC_5" in printed
    report = json.loads((out / "report.json").read_text())
    for key in ("scale_error_max_pct", "joint_rmse_deg", "gc5", "extrinsic_error_deg", "extrinsic_error_mm"):
        assert isinstance(report[key], float), key
    assert report["initial_extrinsic_error_deg"] == pytest.approx(2.0, abs=1e-3)
    # Bundle adjustment turned the two wrong cameras back towards the truth.
    assert report["extrinsic_error_deg"] < 1.0
    assert report["gc5"] > 0.9
    # The person comes back: the plausible-body priors and the demo's nearly symmetric person agree
    # (an 18 %-asymmetric person came out 7.7 % off); the demo printed 1.41 % on Nov 30 2026.
    assert report["scale_error_max_pct"] < 2.0
    assert set(report["metrics"]["trials"]["walk"]["per_camera"]) == {f"cam{i}" for i in range(1, 9)}
    # Per scale group its error against the truth and its standard error, and the joint angles' σ.
    assert set(report["scale_error_pct"]) == set(report["scale_sigma_pct"]) == set(report["scale_params"])
    assert (out / "walk_std.sto").stat().st_size > 0
    motion = read_mot(out / "walk.mot")
    assert "knee_angle_r" in motion.names and len(motion.times) == 90  # 3 s at 30 fps
    markers = read_trc(out / "walk_markers.trc")
    assert len(markers.marker_names) == 87
    for name in ("model_scaled.xml", "calibration_refined.toml", "plots/gc_curve.png", "plots/walk_reprojection.png",
                 "plots/walk_joint_angles.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "model_scaled.osim").exists() or any("model_scaled.osim" in n for n in report.get("notes", []))
    assert (out / "notes.txt").read_text() == "an earlier file"
