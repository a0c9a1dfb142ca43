"""One trial of multi-camera 2D keypoints: reading, checking and aligning it to a calibration.

A capture holds detections in pixels, ``keypoints`` (C, T, J, 2), and their confidences
(C, T, J), for C cameras, T frames and J keypoints, sampled at ``fps`` frames per second;
frame f is the same instant in every camera. A keypoint that was not detected is NaN with
confidence 0; the constructor enforces that pairing so downstream losses can trust confidences.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import zipfile
import zlib
from pathlib import Path
from typing import Sequence

import equinox as eqx
import numpy as np

from mjx_biomech.capture.cameras import CameraRig
from mjx_biomech.errors import InputError
from mjx_biomech.io import atomic_write


class Capture(eqx.Module):
    """2D keypoints of one trial seen by several cameras.

    ``keypoints`` (C, T, J, 2) px and ``confidence`` (C, T, J) in [0, 1] are NumPy float64
    arrays; ``fps`` (Hz), ``start_time`` (s, the time of frame 0), ``keypoint_names`` (J,),
    ``camera_names`` (C,) and ``name`` are static. Non-finite keypoints get confidence 0, and
    non-finite or negative confidences become 0.
    """

    keypoints: np.ndarray
    confidence: np.ndarray
    fps: float = eqx.field(static=True)
    keypoint_names: tuple[str, ...] = eqx.field(static=True)
    camera_names: tuple[str, ...] = eqx.field(static=True)
    name: str = eqx.field(static=True, default="")
    start_time: float = eqx.field(static=True, default=0.0)

    def __init__(self, keypoints, confidence, fps, keypoint_names, camera_names, name="", start_time=0.0):
        kp = np.asarray(keypoints, dtype=float)
        conf = np.asarray(confidence, dtype=float)
        if kp.ndim != 4 or kp.shape[-1] != 2:
            raise InputError(f"keypoints: expected shape (cameras, frames, keypoints, 2), got {kp.shape}")
        if conf.shape != kp.shape[:-1]:
            raise InputError(f"confidence: expected shape {kp.shape[:-1]} to match keypoints, got {conf.shape}")
        keypoint_names = tuple(str(n) for n in keypoint_names)
        camera_names = tuple(str(n) for n in camera_names)
        if len(camera_names) != kp.shape[0] or len(set(camera_names)) != len(camera_names):
            raise InputError(f"camera_names: expected {kp.shape[0]} unique names, got {camera_names}")
        if len(keypoint_names) != kp.shape[2] or len(set(keypoint_names)) != len(keypoint_names):
            raise InputError(f"keypoint_names: expected {kp.shape[2]} unique names, got {len(keypoint_names)}")
        if not (np.isfinite(fps) and fps > 0):
            raise InputError(f"fps: expected a positive frame rate in Hz, got {fps}")
        if not np.isfinite(start_time):
            raise InputError(f"start_time: expected a finite time in seconds, got {start_time}")
        seen = np.all(np.isfinite(kp), axis=-1) & np.isfinite(conf) & (conf > 0)
        self.keypoints = np.where(seen[..., None], kp, np.nan)
        self.confidence = np.where(seen, conf, 0.0)
        self.fps = float(fps)
        self.keypoint_names = keypoint_names
        self.camera_names = camera_names
        self.name = str(name)
        self.start_time = float(start_time)

    @property
    def num_cameras(self) -> int:
        return self.keypoints.shape[0]

    @property
    def num_frames(self) -> int:
        return self.keypoints.shape[1]

    @property
    def num_keypoints(self) -> int:
        return self.keypoints.shape[2]

    @property
    def times(self) -> np.ndarray:
        """(T,) time of every frame in seconds."""
        return self.start_time + np.arange(self.num_frames) / self.fps

    def slice(self, t0: float, t1: float) -> "Capture":
        """The frames with ``t0 <= time < t1`` (seconds); ``start_time`` follows the first kept frame."""
        # Compare in frames with a tolerance so that a bound on a frame's time keeps that frame
        # despite rounding (e.g. 0.1 s at 30 Hz).
        frame = np.arange(self.num_frames)
        f0, f1 = ((t - self.start_time) * self.fps for t in (t0, t1))
        keep = np.flatnonzero((frame >= f0 - 1e-6) & (frame < f1 - 1e-6))
        if keep.size == 0:
            raise InputError(
                f"slice({t0}, {t1}): no frame of capture {self.name!r} lies in that interval "
                f"(frames span {self.times[0]:.4f} to {self.times[-1]:.4f} s)"
            )
        return dataclasses.replace(
            self,
            keypoints=self.keypoints[:, keep], confidence=self.confidence[:, keep], start_time=self.times[keep[0]]
        )

    def validate(self, rig: CameraRig) -> None:
        """Raise :class:`InputError` unless this capture can be fitted with ``rig``.

        Every capture camera must be in the calibration, and at least one keypoint must be
        detected (finite, confidence > 0).
        """
        missing = [c for c in self.camera_names if c not in rig.names]
        if missing:
            where = f"'{rig.source}'" if rig.source else "(in memory)"
            raise InputError(
                f"capture {self.name!r}: camera(s) {', '.join(missing)} not in the calibration {where} "
                f"(its cameras: {', '.join(rig.names)})"
            )
        if not np.any(self.confidence > 0):
            raise InputError(f"capture {self.name!r}: every keypoint is NaN or has zero confidence; nothing to fit")
        too_few = [c for c in rig.names if c not in self.camera_names]
        if too_few:
            raise InputError(
                f"capture {self.name!r}: no keypoints for calibration camera(s) {', '.join(too_few)}; "
                f"use rig.subset({list(self.camera_names)!r}) to fit with the cameras that have them"
            )

    def aligned_to(self, rig: CameraRig) -> "Capture":
        """This capture with its cameras in the rig's order (after :meth:`validate`)."""
        self.validate(rig)
        order = [self.camera_names.index(c) for c in rig.names]
        return dataclasses.replace(
            self,
            keypoints=self.keypoints[order], confidence=self.confidence[order], camera_names=tuple(rig.names)
        )

    @classmethod
    def from_npz(cls, path: str | os.PathLike, name: str | None = None) -> "Capture":
        """Read a capture from ``.npz`` with arrays ``keypoints`` (C, T, J, 2) px, ``confidence``
        (C, T, J), ``camera_names`` (C,), ``keypoint_names`` (J,), ``fps`` () and optionally
        ``start_time`` () s. ``name`` defaults to the file's stem."""
        path = Path(path)
        required = ("keypoints", "confidence", "camera_names", "keypoint_names", "fps")
        try:
            data = np.load(path, allow_pickle=False)
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise InputError(f"{path}: a single .npy array, not an .npz archive")
            with data:
                missing = next((key for key in required if key not in data.files), None)
                arrays = {k: data[k] for k in (*required, "start_time") if k in data.files}
        except InputError:
            raise
        # What a damaged archive raises: the zip layer's (NotImplementedError, RuntimeError: flags for
        # compression or encryption it lacks), zlib's and NumPy's own errors.
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, MemoryError, NotImplementedError,
                RuntimeError) as e:
            raise InputError(f"{path}: cannot read as .npz ({type(e).__name__}: {e})") from None
        if missing is not None:
            raise InputError(f"{path}: missing array '{missing}' (a capture needs {', '.join(required)})")
        for key, kinds in (("keypoints", "fiu"), ("confidence", "fiu"), ("fps", "fiu"), ("start_time", "fiu"),
                           ("camera_names", "U"), ("keypoint_names", "U")):
            if key in arrays and arrays[key].dtype.kind not in kinds:
                expected = "numbers" if kinds == "fiu" else "strings"
                raise InputError(f"{path}: array '{key}' holds {arrays[key].dtype}; expected {expected}")
        for key in ("camera_names", "keypoint_names"):
            if arrays[key].ndim != 1:
                raise InputError(f"{path}: array '{key}' has shape {arrays[key].shape}; expected one name per entry (N,)")
        for key in ("fps", "start_time"):
            if key in arrays and arrays[key].shape != ():
                raise InputError(f"{path}: array '{key}' has shape {arrays[key].shape}; expected one number ()")
        try:
            return cls(
                keypoints=arrays["keypoints"],
                confidence=arrays["confidence"],
                fps=float(arrays["fps"]),
                keypoint_names=arrays["keypoint_names"].tolist(),
                camera_names=arrays["camera_names"].tolist(),
                name=path.stem if name is None else name,
                start_time=float(arrays.get("start_time", 0.0)),
            )
        except InputError as e:
            raise InputError(f"{path}: {e}") from None

    def to_npz(self, path: str | os.PathLike) -> Path:
        """Write the capture (the arrays :meth:`from_npz` reads), atomically."""
        with atomic_write(path, "wb") as f:
            np.savez(
                f,
                keypoints=self.keypoints,
                confidence=self.confidence,
                camera_names=np.array(self.camera_names),
                keypoint_names=np.array(self.keypoint_names),
                fps=np.float64(self.fps),
                start_time=np.float64(self.start_time),
            )
        return Path(path)

    @classmethod
    def from_openpose(
        cls,
        folders: Sequence[str | os.PathLike],
        keypoint_names: Sequence[str],
        fps: float,
        camera_names: Sequence[str] | None = None,
        name: str = "",
    ) -> "Capture":
        """Read OpenPose JSON output, one folder per camera and one ``*.json`` per frame.

        Frames are ordered by the last number in each file name (OpenPose writes
        ``<video>_000000000012_keypoints.json``). Each file's ``people[i].pose_keypoints_2d``
        holds x, y, confidence triplets for the J ``keypoint_names``; when several people are
        present the one with the largest summed confidence is taken, and a frame with nobody is
        NaN with confidence 0. OpenPose marks an undetected keypoint by confidence 0, which
        becomes NaN here. ``camera_names`` defaults to the folder names.
        """
        folders = [Path(f) for f in folders]
        if not folders:
            raise InputError("folders: expected at least one per-camera folder of OpenPose JSON files")
        if camera_names is None:
            camera_names = [f.name for f in folders]
        if len(camera_names) != len(folders):
            raise InputError(f"camera_names: expected {len(folders)} names (one per folder), got {len(camera_names)}")
        J = len(keypoint_names)
        per_camera = [_openpose_frame_files(folder) for folder in folders]
        counts = [len(files) for files in per_camera]
        if len(set(counts)) != 1:
            listing = ", ".join(f"{folder} ({n})" for folder, n in zip(folders, counts))
            raise InputError(f"OpenPose folders have different numbers of frames: {listing}")
        kp = np.full((len(folders), counts[0], J, 2), np.nan)
        conf = np.zeros((len(folders), counts[0], J))
        for c, files in enumerate(per_camera):
            for t, file in enumerate(files):
                triplets = _openpose_person(file, J)
                if triplets is not None:
                    kp[c, t] = triplets[:, :2]
                    conf[c, t] = triplets[:, 2]
        return cls(kp, conf, fps, keypoint_names, camera_names, name=name)


def _openpose_frame_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder of OpenPose JSON files")
    numbered = []
    for file in folder.glob("*.json"):
        numbers = re.findall(r"\d+", file.stem)
        if not numbers:
            raise InputError(f"{file}: expected a frame number in the file name (as OpenPose writes)")
        numbered.append((int(numbers[-1]), file))
    if not numbered:
        raise InputError(f"{folder}: no .json files (expected one OpenPose file per frame)")
    numbered.sort()
    frames = [n for n, _ in numbered]
    duplicate = next((n for n, m in zip(frames, frames[1:]) if n == m), None)
    if duplicate is not None:
        raise InputError(f"{folder}: two files have frame number {duplicate}")
    return [file for _, file in numbered]


def _openpose_person(file: Path, num_keypoints: int) -> np.ndarray | None:
    """(J, 3) x, y, confidence of the most confident person in one OpenPose file, or None."""
    try:
        doc = json.loads(file.read_text())
        people = doc["people"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{file}: expected OpenPose JSON with a 'people' list ({e})") from e
    best, best_score = None, -np.inf
    for i, person in enumerate(people):
        try:
            values = np.asarray(person["pose_keypoints_2d"], dtype=float)
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"{file}: people[{i}].pose_keypoints_2d: expected a list of numbers ({e})") from e
        if values.shape != (3 * num_keypoints,):
            raise InputError(
                f"{file}: people[{i}].pose_keypoints_2d: expected {3 * num_keypoints} values "
                f"(x, y, confidence for {num_keypoints} keypoints), got {values.size}"
            )
        triplets = values.reshape(num_keypoints, 3)
        score = np.nansum(triplets[:, 2])
        if score > best_score:
            best, best_score = triplets, score
    return best


def _mirror_name(name: str, names: set[str]) -> str | None:
    """The name of ``name``'s mirror keypoint in ``names`` (None if central or unpaired)."""
    candidates = []
    for a, b in (("left", "right"), ("Left", "Right"), ("LEFT", "RIGHT")):
        if a in name:
            candidates.append(name.replace(a, b))
        if b in name:
            candidates.append(name.replace(b, a))
    for a, b in (("_l", "_r"), ("_L", "_R")):
        if name.endswith(a):
            candidates.append(name[: -len(a)] + b)
        if name.endswith(b):
            candidates.append(name[: -len(b)] + a)
    # Prefixes: 'LKnee' (Halpe, OpenPose) and 'lknee' (BML-MoVi): one letter, then the rest.
    for a, b in (("L", "R"), ("l", "r")):
        if name.startswith(a):
            candidates.append(b + name[1:])
        if name.startswith(b):
            candidates.append(a + name[1:])
    for c in candidates:
        if c != name and c in names:
            return c
    return None


def mirror_pairs(keypoint_names) -> np.ndarray:
    """(K, 2) int: index pairs (left, right) of keypoints that mirror each other by name
    (``left_knee``/``right_knee``, ``LKnee``/``RKnee``, ``lkne``/``rkne``, ``knee_l``/``knee_r``);
    central keypoints (nose, neck, ...) are in no pair."""
    names = list(keypoint_names)
    present = set(names)
    pairs = set()
    for i, n in enumerate(names):
        m = _mirror_name(n, present)
        if m is not None and _mirror_name(m, present) == n:
            j = names.index(m)
            pairs.add((min(i, j), max(i, j)))
    return np.array(sorted(pairs), int).reshape(-1, 2)
