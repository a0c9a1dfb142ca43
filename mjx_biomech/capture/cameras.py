"""OpenCV pinhole cameras: projection, undistortion, triangulation and calibration files.

Conventions (OpenCV, anipose, Pose2Sim): a camera's extrinsics map the world into the camera,
``x_cam = R(rvec) @ X_world + tvec`` (metres), with R given as a Rodrigues rotation vector. The
camera looks along +z, image x points right and y down, pixels start at the top-left corner.
Distortion is OpenCV's five-term model ``(k1, k2, p1, p2, k3)``: with ``x = X/Z``, ``y = Y/Z``
and ``r² = x² + y²``,

    radial = 1 + k1 r² + k2 r⁴ + k3 r⁶
    x_d = x·radial + 2 p1 x y + p2 (r² + 2 x²)
    y_d = y·radial + p1 (r² + 2 y²) + 2 p2 x y
    u = fx x_d + cx,  v = fy y_d + cy.

Everything that computes is pure JAX, so projections differentiate in points, extrinsics and
intrinsics; the file readers and the random perturbation are NumPy at the edge.
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from pathlib import Path
from typing import Any, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import tomli_w
from scipy.spatial.transform import Rotation

from mjx_biomech.body.rotations import rodrigues
from mjx_biomech.errors import InputError
from mjx_biomech.io import atomic_write


def _array(x) -> jax.Array:
    return jnp.asarray(x, dtype=jnp.result_type(float))


class Camera(eqx.Module):
    """One calibrated camera (OpenCV model).

    Fields: ``name`` and ``size`` = (width, height) px are static; ``fx``, ``fy``, ``cx``, ``cy``
    (px, scalars), ``dist`` (5,) = k1 k2 p1 p2 k3, ``rvec`` (3,) world→camera Rodrigues vector
    (rad), ``tvec`` (3,) world→camera translation (m).
    """

    name: str = eqx.field(static=True)
    size: tuple[int, int] = eqx.field(static=True)
    fx: jax.Array = eqx.field(converter=_array)
    fy: jax.Array = eqx.field(converter=_array)
    cx: jax.Array = eqx.field(converter=_array)
    cy: jax.Array = eqx.field(converter=_array)
    dist: jax.Array = eqx.field(converter=_array)
    rvec: jax.Array = eqx.field(converter=_array)
    tvec: jax.Array = eqx.field(converter=_array)

    @property
    def K(self) -> jax.Array:
        """(3, 3) intrinsic matrix in pixels."""
        zero = jnp.zeros_like(self.fx)
        one = jnp.ones_like(self.fx)
        return jnp.stack(
            [jnp.stack([self.fx, zero, self.cx]), jnp.stack([zero, self.fy, self.cy]), jnp.stack([zero, zero, one])]
        )

    @property
    def R(self) -> jax.Array:
        """(3, 3) world→camera rotation matrix."""
        return rodrigues(self.rvec)

    @property
    def center(self) -> jax.Array:
        """(3,) camera centre in world coordinates (m): ``-Rᵀ t``."""
        return -self.R.T @ self.tvec


class CameraRig(eqx.Module):
    """Several cameras stacked along a leading axis C, in a fixed order.

    Array fields are those of :class:`Camera` with a leading (C,) axis. ``names`` and ``sizes``
    are static. ``source`` (static) is the calibration file the rig was read from, used in error
    messages; ``toml_extras`` (static JSON text) keeps calibration-file content this class has no
    field for (the ``[metadata]`` table, section names, unknown keys) so that writing the rig
    back preserves it.
    """

    names: tuple[str, ...] = eqx.field(static=True)
    sizes: tuple[tuple[int, int], ...] = eqx.field(static=True)
    fx: jax.Array = eqx.field(converter=_array)
    fy: jax.Array = eqx.field(converter=_array)
    cx: jax.Array = eqx.field(converter=_array)
    cy: jax.Array = eqx.field(converter=_array)
    dist: jax.Array = eqx.field(converter=_array)
    rvec: jax.Array = eqx.field(converter=_array)
    tvec: jax.Array = eqx.field(converter=_array)
    source: str | None = eqx.field(static=True, default=None)
    toml_extras: str = eqx.field(static=True, default="{}")

    @classmethod
    def from_cameras(
        cls, cameras: Sequence[Camera], source: str | None = None, toml_extras: str = "{}"
    ) -> "CameraRig":
        """Stack single cameras (names must be unique) into a rig, in the order given."""
        names = tuple(c.name for c in cameras)
        if len(set(names)) != len(names) or not names:
            raise InputError(f"cameras: expected at least one camera and unique names, got {names}")
        stack = lambda attr: jnp.stack([jnp.asarray(getattr(c, attr)) for c in cameras])  # noqa: E731
        return cls(
            names=names,
            sizes=tuple(tuple(int(v) for v in c.size) for c in cameras),
            fx=stack("fx"),
            fy=stack("fy"),
            cx=stack("cx"),
            cy=stack("cy"),
            dist=stack("dist"),
            rvec=stack("rvec"),
            tvec=stack("tvec"),
            source=source,
            toml_extras=toml_extras,
        )

    def __len__(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        """Position of camera ``name`` in the rig."""
        if name not in self.names:
            raise InputError(
                f"camera {name!r} is not in the calibration {self._where()} (cameras: {', '.join(self.names)})"
            )
        return self.names.index(name)

    def __getitem__(self, name: str) -> Camera:
        i = self.index(name)
        return Camera(
            name=name,
            size=self.sizes[i],
            fx=self.fx[i],
            fy=self.fy[i],
            cx=self.cx[i],
            cy=self.cy[i],
            dist=self.dist[i],
            rvec=self.rvec[i],
            tvec=self.tvec[i],
        )

    def _where(self) -> str:
        return f"'{self.source}'" if self.source else "(in memory)"

    @property
    def K(self) -> jax.Array:
        """(C, 3, 3) intrinsic matrices in pixels."""
        zero = jnp.zeros_like(self.fx)
        one = jnp.ones_like(self.fx)
        rows = [
            jnp.stack([self.fx, zero, self.cx], -1),
            jnp.stack([zero, self.fy, self.cy], -1),
            jnp.stack([zero, zero, one], -1),
        ]
        return jnp.stack(rows, -2)

    @property
    def R(self) -> jax.Array:
        """(C, 3, 3) world→camera rotation matrices."""
        return rodrigues(self.rvec)

    @property
    def centers(self) -> jax.Array:
        """(C, 3) camera centres in world coordinates (m): ``-Rᵀ t``."""
        return -jnp.einsum("cji,cj->ci", self.R, self.tvec)

    def subset(self, names: Sequence[str]) -> "CameraRig":
        """The rig restricted to (and reordered as) ``names``."""
        idx = np.array([self.index(n) for n in names], dtype=int)
        return CameraRig(
            names=tuple(names),
            sizes=tuple(self.sizes[i] for i in idx),
            fx=self.fx[idx],
            fy=self.fy[idx],
            cx=self.cx[idx],
            cy=self.cy[idx],
            dist=self.dist[idx],
            rvec=self.rvec[idx],
            tvec=self.tvec[idx],
            source=self.source,
            toml_extras=self.toml_extras,
        )

    def with_extrinsics(self, rvecs, tvecs) -> "CameraRig":
        """The same rig with new world→camera rotations (C, 3) and translations (C, 3) (m)."""
        rvecs, tvecs = _array(rvecs), _array(tvecs)
        if rvecs.shape != self.rvec.shape or tvecs.shape != self.tvec.shape:
            raise InputError(
                f"with_extrinsics: expected rvecs and tvecs of shape {self.rvec.shape}, "
                f"got {rvecs.shape} and {tvecs.shape}"
            )
        return eqx.tree_at(lambda r: (r.rvec, r.tvec), self, (rvecs, tvecs))

    def perturb(self, seed: int | np.random.Generator, angle_deg: float, distance_m: float) -> "CameraRig":
        """Every camera turned by exactly ``angle_deg`` about a random axis (through its centre)
        and its centre moved by exactly ``distance_m`` in a random direction.

        For testing bundle adjustment: ``extrinsic_difference(rig, rig.perturb(...))`` returns
        ``angle_deg`` and ``distance_m`` for every camera.
        """
        rng = np.random.default_rng(seed)
        C = len(self)
        rot = Rotation.from_rotvec(np.array(self.rvec, dtype=float))
        axes = _random_unit(rng, C)
        turned = Rotation.from_rotvec(axes * math.radians(angle_deg)) * rot
        centers = np.asarray(self.centers, dtype=float) + distance_m * _random_unit(rng, C)
        tvecs = -np.einsum("cij,cj->ci", turned.as_matrix(), centers)
        return self.with_extrinsics(turned.as_rotvec(), tvecs)

    @classmethod
    def from_toml(cls, path: str | os.PathLike) -> "CameraRig":
        """Read an anipose/Pose2Sim ``calibration.toml``.

        One table per camera with ``name``, ``size`` [w, h], ``matrix`` (3×3 K), ``distortions``
        (4 values k1 k2 p1 p2 as Pose2Sim writes, or 5 with k3), ``rotation`` (Rodrigues),
        ``translation`` (m) and optionally ``fisheye`` (must be false); a ``[metadata]`` table is
        kept as is. Cameras keep the file's order.
        """
        path = Path(path)
        try:
            with open(path, "rb") as f:
                doc = tomllib.load(f)
        except UnicodeDecodeError as e:
            raise InputError(f"{path}: not UTF-8 text ({e})") from None
        except tomllib.TOMLDecodeError as e:
            raise InputError(f"{path}: not valid TOML ({e})") from None
        except RecursionError:
            raise InputError(f"{path}: not a calibration (arrays or tables nested too deeply to read)") from None
        except (OSError, ValueError) as e:  # ValueError: a path with a NUL character
            raise InputError(f"{path}: cannot read calibration ({getattr(e, 'strerror', None) or e})") from None
        metadata = doc.get("metadata", {})
        cameras, extras = [], {}
        for section, table in doc.items():
            if section == "metadata" or not isinstance(table, dict):
                continue
            cam, extra = _camera_from_table(path, section, table)
            if cam.name in extras:
                raise InputError(f"{path}: [{section}]: camera name {cam.name!r} appears in more than one table")
            cameras.append(cam)
            extras[cam.name] = {"section": section, "extra": extra}
        if not cameras:
            raise InputError(f"{path}: expected at least one camera table (with name, size, matrix, ...), found none")
        extras_json = json.dumps({"metadata": metadata, "cameras": extras}, default=str)
        return cls.from_cameras(cameras, source=str(path), toml_extras=extras_json)

    def to_toml(self, path: str | os.PathLike) -> Path:
        """Write the rig as an anipose/Pose2Sim ``calibration.toml`` (atomically)."""
        kept = json.loads(self.toml_extras)
        kept_cams = kept.get("cameras", {})
        doc: dict[str, Any] = {}
        for i, name in enumerate(self.names):
            info = kept_cams.get(name, {})
            table = {
                "name": name,
                "size": list(self.sizes[i]),
                "matrix": [
                    [float(self.fx[i]), 0.0, float(self.cx[i])],
                    [0.0, float(self.fy[i]), float(self.cy[i])],
                    [0.0, 0.0, 1.0],
                ],
                "distortions": [float(v) for v in self.dist[i]],
                "rotation": [float(v) for v in self.rvec[i]],
                "translation": [float(v) for v in self.tvec[i]],
                "fisheye": False,
            }
            table.update(info.get("extra", {}))
            doc[info.get("section", name)] = table
        doc["metadata"] = kept.get("metadata") or {"adjusted": False, "error": 0.0}
        with atomic_write(path) as f:
            f.write(tomli_w.dumps(doc))
        return Path(path)


def _random_unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


_CAMERA_KEYS = ("name", "size", "matrix", "distortions", "rotation", "translation", "fisheye")


def _camera_from_table(path: Path, section: str, table: dict) -> tuple[Camera, dict]:
    where = f"{path}: [{section}]"
    for key in _CAMERA_KEYS[:-1]:
        if key not in table:
            raise InputError(f"{where}: missing key '{key}' (a camera table needs {', '.join(_CAMERA_KEYS[:-1])})")
    if not isinstance(table.get("fisheye", False), bool):
        raise InputError(f"{where}: 'fisheye' must be true or false, got {table['fisheye']!r}")
    if table.get("fisheye", False):
        raise InputError(f"{where}: fisheye = true is not supported (only the OpenCV pinhole model k1 k2 p1 p2 k3)")

    def numbers(key: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        value = table[key]
        try:
            kinds = np.asarray(value, dtype=object)
            a = np.asarray(value, dtype=float)
        except (TypeError, ValueError, OverflowError):
            raise InputError(f"{where}: '{key}' must be numbers, got {value!r}") from None
        # TOML booleans would pass as 0 and 1.
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in kinds.ravel()):
            raise InputError(f"{where}: '{key}' must be numbers, got {value!r}")
        if shape is not None and a.shape != shape:
            raise InputError(f"{where}: '{key}' must have shape {shape}, got {a.shape}")
        if not np.all(np.isfinite(a)):
            raise InputError(f"{where}: '{key}' must be finite numbers, got {a.tolist()}")
        return a

    size = numbers("size", (2,))
    if np.any(size != np.round(size)) or np.any(size <= 0) or np.any(size >= 2**31):
        raise InputError(f"{where}: 'size' must be positive whole pixels [w, h] (below 2^31), got {table['size']!r}")
    K = numbers("matrix", (3, 3))
    if K[0, 1] != 0 or K[1, 0] != 0 or np.any(K[2] != (0.0, 0.0, 1.0)) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise InputError(
            f"{where}: 'matrix' must be [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0 (no skew), got {K.tolist()}"
        )
    dist = numbers("distortions")
    if dist.shape not in ((4,), (5,)):
        raise InputError(
            f"{where}: 'distortions' must be 4 (k1 k2 p1 p2) or 5 (k1 k2 p1 p2 k3) values, got {dist.shape}"
        )
    if not isinstance(table["name"], str):
        raise InputError(f"{where}: 'name' must be a string, got {table['name']!r}")
    cam = Camera(
        name=table["name"],
        size=(int(size[0]), int(size[1])),
        fx=K[0, 0],
        fy=K[1, 1],
        cx=K[0, 2],
        cy=K[1, 2],
        dist=np.pad(dist, (0, 5 - dist.size)),
        rvec=numbers("rotation", (3,)),
        tvec=numbers("translation", (3,)),
    )
    extra = {k: v for k, v in table.items() if k not in _CAMERA_KEYS}
    return cam, extra


def extrinsic_difference(rig_a: CameraRig, rig_b: CameraRig) -> tuple[np.ndarray, np.ndarray]:
    """Per-camera pose difference between two rigs with the same cameras.

    Returns ``(angle_deg (C,), dist_m (C,))``: the angle of the relative rotation
    ``R_a R_bᵀ`` and the distance between the camera centres. Cameras are matched by name.
    """
    if set(rig_a.names) != set(rig_b.names):
        raise InputError(f"extrinsic_difference: rigs have different cameras {rig_a.names} and {rig_b.names}")
    rig_b = rig_b.subset(rig_a.names)
    Ra, Rb = np.asarray(rig_a.R, dtype=float), np.asarray(rig_b.R, dtype=float)
    rel = Ra @ np.swapaxes(Rb, -1, -2)
    # atan2 of the skew and symmetric parts stays accurate for small and large angles alike.
    skew = np.stack([rel[:, 2, 1] - rel[:, 1, 2], rel[:, 0, 2] - rel[:, 2, 0], rel[:, 1, 0] - rel[:, 0, 1]], -1)
    angle = np.arctan2(np.linalg.norm(skew, axis=-1) / 2, (np.trace(rel, axis1=1, axis2=2) - 1) / 2)
    dist = np.linalg.norm(np.asarray(rig_a.centers, dtype=float) - np.asarray(rig_b.centers, dtype=float), axis=-1)
    return np.degrees(angle), dist
