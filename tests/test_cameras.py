"""Cameras: OpenCV projection against an independent NumPy derivation, gradients against finite
differences, undistortion and triangulation round trips, calibration.toml reading and writing."""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import scipy.linalg  # noqa: E402
from scipy.spatial.transform import Rotation  # noqa: E402

from mjx_biomech.body.rotations import rodrigues  # noqa: E402
from mjx_biomech.capture.cameras import Camera, CameraRig, extrinsic_difference  # noqa: E402
from mjx_biomech.capture.projection import points_camera, project, triangulate, triangulate_robust, undistort_points  # noqa: E402
from mjx_biomech.io import InputError  # noqa: E402

DIST = [
    [-0.21, 0.05, 1.2e-3, -6e-4, 0.012],
    [0.08, -0.02, -4e-4, 9e-4, 0.0],
    [-0.05, 0.01, 0.0, 0.0, -0.003],
    [0.0, 0.0, 0.0, 0.0, 0.0],
]


def _look_at(center, target=(0.0, 0.0, 0.9)):
    """World→camera (rvec, tvec) of a camera at ``center`` looking at ``target``, Z-up world."""
    center = np.asarray(center, float)
    forward = np.asarray(target, float) - center
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    R = np.stack([right, down, forward])
    return Rotation.from_matrix(R).as_rotvec(), -R @ center


def make_rig(n=4):
    cams = []
    for i in range(n):
        a = 2 * np.pi * i / n + 0.3
        rvec, tvec = _look_at([3.5 * np.cos(a), 3.5 * np.sin(a), 1.5 + 0.2 * i])
        cams.append(
            Camera(
                name=f"cam{i + 1:02d}",
                size=(1088, 1920),
                fx=1650.0 + 10 * i,
                fy=1652.0 + 10 * i,
                cx=540.0 + i,
                cy=960.0 - 2 * i,
                dist=DIST[i % 4],
                rvec=rvec,
                tvec=tvec,
            )
        )
    return CameraRig.from_cameras(cams)


def numpy_project(K, dist, rvec, tvec, X):
    """Independent OpenCV pinhole projection of points X (N, 3): rotation by the matrix
    exponential of the skew matrix, distortion written term by term as in OpenCV's docs."""
    wx = np.array([[0, -rvec[2], rvec[1]], [rvec[2], 0, -rvec[0]], [-rvec[1], rvec[0], 0]])
    R = scipy.linalg.expm(wx)
    k1, k2, p1, p2, k3 = dist
    out = []
    for p in X:
        Xc = R @ p + tvec
        x, y = Xc[0] / Xc[2], Xc[1] / Xc[2]
        r2 = x * x + y * y
        radial = 1 + k1 * r2 + k2 * r2**2 + k3 * r2**3
        xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
        out.append([K[0, 0] * xd + K[0, 2], K[1, 1] * yd + K[1, 2]])
    return np.array(out)


@pytest.fixture(scope="module")
def rig():
    return make_rig()


@pytest.fixture(scope="module")
def points():
    rng = np.random.default_rng(0)
    return rng.uniform([-0.5, -0.5, 0.0], [0.5, 0.5, 1.8], size=(6, 5, 3))


def test_projection_matches_independent_numpy_opencv_model(rig, points):
    uv = np.asarray(project(rig, points))
    assert uv.shape == (4, 6, 5, 2)
    for c, name in enumerate(rig.names):
        cam = rig[name]
        ref = numpy_project(np.asarray(cam.K), np.asarray(cam.dist), np.asarray(cam.rvec), np.asarray(cam.tvec), points.reshape(-1, 3))
        np.testing.assert_allclose(uv[c].reshape(-1, 2), ref, rtol=0, atol=1e-9)
        # A single camera projects the same as its row in the rig.
        np.testing.assert_allclose(np.asarray(project(cam, points)), uv[c], rtol=0, atol=1e-9)
    # The points lie in front of every camera and inside the image.
    depth = np.asarray(points_camera(rig, points))[..., 2]
    assert np.all(depth > 2.0)
    assert np.all((uv[..., 0] > 0) & (uv[..., 0] < 1088) & (uv[..., 1] > 0) & (uv[..., 1] < 1920))


def test_rodrigues_matches_matrix_exponential_including_tiny_and_zero_angles():
    rng = np.random.default_rng(1)
    for scale in (0.0, 1e-9, 1e-4, 3e-3, 0.7, 3.0):
        r = rng.normal(size=3)
        r = scale * r / np.linalg.norm(r)
        wx = np.array([[0, -r[2], r[1]], [r[2], 0, -r[0]], [-r[1], r[0], 0]])
        np.testing.assert_allclose(np.asarray(rodrigues(r)), scipy.linalg.expm(wx), rtol=0, atol=1e-14)


def _finite_difference(f, x, rel_step=1e-6):
    """Central differences with a step relative to each value (fx ~ 1650 px needs a larger one)."""
    x = np.asarray(x, float)
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        h = rel_step * max(1.0, abs(x[i]))
        e = np.zeros_like(x)
        e[i] = h
        g[i] = (f(x + e) - f(x - e)) / (2 * h)
    return g


@pytest.mark.parametrize("rvec_zero", [False, True])
def test_projection_gradients_match_finite_differences(rig, points, rvec_zero):
    cam = rig["cam01"]
    if rvec_zero:
        # The camera axes aligned with the world; the points are placed in front of it.
        cam = Camera(cam.name, cam.size, cam.fx, cam.fy, cam.cx, cam.cy, cam.dist, jnp.zeros(3), jnp.array([0.1, -0.9, 3.0]))
    X = points[0]
    weights = np.random.default_rng(2).normal(size=(5, 2))

    def loss(rvec, tvec, fx, dist, X):
        c = Camera(cam.name, cam.size, fx, cam.fy, cam.cx, cam.cy, dist, rvec, tvec)
        return jnp.sum(project(c, X) * weights)

    args = (cam.rvec, cam.tvec, cam.fx, cam.dist, jnp.asarray(X))
    grads = jax.grad(loss, argnums=(0, 1, 2, 3, 4))(*args)
    for k, g in enumerate(grads):
        g = np.asarray(g)
        assert np.all(np.isfinite(g))

        def f(v, k=k):
            a = list(args)
            a[k] = jnp.asarray(v)
            return float(loss(*a))

        fd = _finite_difference(f, np.asarray(args[k]))
        np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-5 * np.abs(fd).max())


def test_undistort_points_inverts_the_distortion(rig, points):
    uv = project(rig, points)
    Xc = np.asarray(points_camera(rig, points))
    xy = np.asarray(undistort_points(rig, uv))
    np.testing.assert_allclose(xy, Xc[..., :2] / Xc[..., 2:], rtol=0, atol=1e-13)
    # NaN pixels stay NaN and do not disturb the others.
    uv_nan = np.asarray(uv).copy()
    uv_nan[1, 0, 0] = np.nan
    xy_nan = np.asarray(undistort_points(rig, uv_nan))
    assert np.all(np.isnan(xy_nan[1, 0, 0]))
    np.testing.assert_allclose(xy_nan[1, 0, 1:], xy[1, 0, 1:], rtol=0, atol=1e-15)


def test_triangulate_recovers_noiseless_points_and_ignores_missing_views(rig, points):
    uv = np.asarray(project(rig, points))
    conf = np.random.default_rng(3).uniform(0.3, 1.0, size=uv.shape[:-1])
    X = np.asarray(triangulate(rig, uv, conf))
    assert X.shape == points.shape
    assert np.max(np.linalg.norm(X - points, axis=-1)) < 1e-6
    # Spoil views two ways: NaN pixels in one camera, garbage with zero confidence in another.
    uv_bad, conf_bad = uv.copy(), conf.copy()
    uv_bad[0, :3] = np.nan
    uv_bad[1, 3:] += 200.0
    conf_bad[1, 3:] = 0.0
    X = np.asarray(triangulate(rig, uv_bad, conf_bad))
    assert np.max(np.linalg.norm(X - points, axis=-1)) < 1e-6
    # One view left: no point.
    conf_one = np.zeros_like(conf)
    conf_one[2] = 1.0
    conf_one[3, :, 0] = 1.0
    X = np.asarray(triangulate(rig, uv, conf_one))
    assert np.all(np.isnan(X[:, 1:]))
    np.testing.assert_allclose(X[:, 0], points[:, 0], rtol=0, atol=1e-6)


def test_robust_triangulation_tolerates_one_outlying_camera(rig, points):
    uv = np.asarray(project(rig, points))
    conf = np.ones(uv.shape[:-1])
    rng = np.random.default_rng(4)
    bad_cam = rng.integers(0, 4, size=points.shape[:-1])
    offsets = rng.uniform(40, 120, size=points.shape[:-1] + (2,)) * rng.choice([-1, 1], size=points.shape[:-1] + (2,))
    uv_out = uv.copy()
    for idx in np.ndindex(points.shape[:-1]):
        uv_out[(bad_cam[idx],) + idx] += offsets[idx]
    plain = np.asarray(triangulate(rig, uv_out, conf))
    assert np.min(np.linalg.norm(plain - points, axis=-1)) > 1e-3
    X, used = triangulate_robust(rig, uv_out, conf, threshold_px=10.0)
    X, used = np.asarray(X), np.asarray(used)
    assert np.max(np.linalg.norm(X - points, axis=-1)) < 1e-6
    expected_used = np.ones((4,) + points.shape[:-1], bool)
    for idx in np.ndindex(points.shape[:-1]):
        expected_used[(bad_cam[idx],) + idx] = False
    np.testing.assert_array_equal(used, expected_used)
    # Without outliers every view is used.
    X, used = triangulate_robust(rig, uv, conf, threshold_px=10.0)
    assert np.max(np.linalg.norm(np.asarray(X) - points, axis=-1)) < 1e-6
    assert np.all(np.asarray(used))


def _assert_same_rig(a, b):
    assert a.names == b.names and a.sizes == b.sizes
    for f in ("fx", "fy", "cx", "cy", "dist", "rvec", "tvec"):
        np.testing.assert_array_equal(np.asarray(getattr(a, f)), np.asarray(getattr(b, f)), err_msg=f)


def test_toml_round_trip_is_exact_and_keeps_unknown_keys(rig, tmp_path):
    path = tmp_path / "calibration.toml"
    rig.to_toml(path)
    back = CameraRig.from_toml(path)
    _assert_same_rig(rig, back)
    assert back.source == str(path)
    # Unknown keys and metadata written by another tool survive a read/write cycle.
    text = path.read_text().replace('name = "cam02"', 'name = "cam02"\nserial = 4711', 1)
    text = text.replace("adjusted = false", 'adjusted = true\nnote = "lab A"')
    path.write_text(text)
    CameraRig.from_toml(path).to_toml(tmp_path / "again.toml")
    again = (tmp_path / "again.toml").read_text()
    assert "serial = 4711" in again and 'note = "lab A"' in again and "adjusted = true" in again
    _assert_same_rig(rig, CameraRig.from_toml(tmp_path / "again.toml"))


POSE2SIM_TOML = """
[int_cam01_img]
name = "cam01"
size = [ 1088.0, 1920.0,]
matrix = [ [ 1681.25, 0.0, 532.5,], [ 0.0, 1681.0, 948.0,], [ 0.0, 0.0, 1.0,],]
distortions = [ -0.0007, 0.0021, 9.5e-06, 1.0e-05,]
rotation = [ 1.6882, 1.0483, -0.4195,]
translation = [ 0.3211, 0.9563, 2.8907,]
fisheye = false

[int_cam02_img]
name = "cam02"
size = [ 1088.0, 1920.0,]
matrix = [ [ 1673.5, 0.0, 534.25,], [ 0.0, 1673.75, 963.0,], [ 0.0, 0.0, 1.0,],]
distortions = [ -0.0007, 0.0021, 1.5e-05, 4.5e-06,]
rotation = [ 1.3497, 1.5963, -1.1983,]
translation = [ -0.1115, 0.7766, 3.0675,]
fisheye = false

[metadata]
adjusted = false
error = 0.0
"""


def test_reads_pose2sim_calibration_with_four_distortions(tmp_path):
    path = tmp_path / "Calib_pose2sim.toml"
    path.write_text(POSE2SIM_TOML)
    rig = CameraRig.from_toml(path)
    assert rig.names == ("cam01", "cam02") and rig.sizes == ((1088, 1920), (1088, 1920))
    np.testing.assert_array_equal(np.asarray(rig.dist[0]), [-0.0007, 0.0021, 9.5e-06, 1.0e-05, 0.0])
    np.testing.assert_array_equal(np.asarray(rig.K[1]), [[1673.5, 0, 534.25], [0, 1673.75, 963.0], [0, 0, 1]])
    np.testing.assert_array_equal(np.asarray(rig["cam02"].tvec), [-0.1115, 0.7766, 3.0675])
    # Writing keeps Pose2Sim's section names, so Pose2Sim finds its tables again.
    rig.to_toml(tmp_path / "out.toml")
    assert "[int_cam02_img]" in (tmp_path / "out.toml").read_text()


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda t: t.replace('translation = [ -0.1115, 0.7766, 3.0675,]\n', ""), r"\[int_cam02_img\]: missing key 'translation'"),
        (lambda t: t.replace(", [ 0.0, 0.0, 1.0,],]", ",]", 1), r"\[int_cam01_img\]: 'matrix' must have shape \(3, 3\)"),
        (lambda t: t.replace("fisheye = false", "fisheye = true", 1), r"fisheye = true is not supported"),
        (lambda t: t.replace("1.0e-05,]", "1.0e-05, 0.0, 0.1, 0.2]", 1), r"'distortions' must be 4 .* or 5"),
        (lambda t: t.replace("rotation = [ 1.3497,", "rotation = [ nan,", 1), r"\[int_cam02_img\]: 'rotation' must be finite"),
        (lambda t: t.replace("[ 1681.25, 0.0,", "[ inf, 0.0,", 1), r"\[int_cam01_img\]: 'matrix' must be finite"),
        (lambda t: t.replace("[ 0.0, 1673.75,", "[ 0.0, -1673.75,", 1), r"\[int_cam02_img\]: 'matrix' must be .* fx, fy > 0"),
    ],
)
def test_bad_calibration_errors_name_file_section_and_key(tmp_path, edit, expected):
    path = tmp_path / "bad.toml"
    path.write_text(edit(POSE2SIM_TOML))
    with pytest.raises(InputError, match=expected) as info:
        CameraRig.from_toml(path)
    assert str(path) in str(info.value)


def test_perturbation_is_measured_exactly_by_extrinsic_difference(rig):
    moved = rig.perturb(7, angle_deg=2.5, distance_m=0.04)
    angle, dist = extrinsic_difference(rig, moved)
    np.testing.assert_allclose(angle, 2.5, rtol=1e-9)
    np.testing.assert_allclose(dist, 0.04, rtol=1e-9)
    # Independent check of the angles: scipy's relative rotation magnitude.
    rel = Rotation.from_rotvec(np.array(moved.rvec)) * Rotation.from_rotvec(np.array(rig.rvec)).inv()
    np.testing.assert_allclose(np.degrees(rel.magnitude()), angle, rtol=1e-9)
    zero_angle, zero_dist = extrinsic_difference(rig, rig.subset(rig.names[::-1]))
    np.testing.assert_allclose(zero_angle, 0.0, atol=1e-6)
    np.testing.assert_allclose(zero_dist, 0.0, atol=1e-12)
    # with_extrinsics puts them back, leaving intrinsics alone.
    back = moved.with_extrinsics(rig.rvec, rig.tvec)
    _assert_same_rig(rig, back)
    with pytest.raises(InputError, match="with_extrinsics"):
        rig.with_extrinsics(rig.rvec[:2], rig.tvec)


def test_rig_indexing_and_subset(rig):
    assert len(rig) == 4 and rig.names == ("cam01", "cam02", "cam03", "cam04")
    sub = rig.subset(["cam03", "cam01"])
    assert sub.names == ("cam03", "cam01")
    np.testing.assert_array_equal(np.asarray(sub.tvec[0]), np.asarray(rig["cam03"].tvec))
    np.testing.assert_allclose(np.asarray(rig["cam02"].center), np.asarray(rig.centers[1]), atol=1e-12)
    with pytest.raises(InputError, match="camera 'cam09' is not in the calibration"):
        rig["cam09"]
