"""Marker trajectory files (.trc, PathFileType 4): read and write 3D marker positions.

Layout, tab-separated:

    PathFileType  4  (X/Y/Z)  <file name>
    DataRate  CameraRate  NumFrames  NumMarkers  Units  OrigDataRate  OrigDataStartFrame  OrigNumFrames
    <the eight values>
    Frame#  Time  <marker 1>  <tab>  <tab>  <marker 2> ...
            X1  Y1  Z1  X2  Y2  Z2 ...
    <optional blank line>
    <frame>  <time>  <x1>  <y1>  <z1>  <x2> ...

A missing marker is written as empty cells or ``NaN``. Inside the project positions are metres.

Axes: files are in OpenSim's Y-up ground frame; ``z_up=True`` / ``z_up_input=True`` turn
positions to and from MuJoCo's Z-up world (:mod:`converters.opensim_frame`).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from converters.opensim_frame import y_up_to_z_up, z_up_to_y_up
from mjx_biomech.errors import InputError
from mjx_biomech.io import atomic_write, check_increasing_rows, check_times_argument, read_text_lines

__all__ = ["TrcData", "read_trc", "write_trc"]

# Frame numbers are whole numbers that a float64 holds exactly.
_MAX_FRAME = 2**53
# Metres per file unit.
_UNIT_SCALE = {"m": 1.0, "cm": 0.01, "mm": 0.001}
_HEADER_KEYS = (
    "DataRate",
    "CameraRate",
    "NumFrames",
    "NumMarkers",
    "Units",
    "OrigDataRate",
    "OrigDataStartFrame",
    "OrigNumFrames",
)


@dataclasses.dataclass(frozen=True)
class TrcData:
    """Marker trajectories read from a .trc file.

    Attributes:
      times: (T,) seconds, strictly increasing.
      frame_numbers: (T,) the file's frame numbers (int64).
      marker_names: (M,) marker labels.
      positions: (T, M, 3) metres; NaN where a marker is missing.
      data_rate: frames per second (the file's DataRate).
      camera_rate: the file's CameraRate, frames per second.
      units_original: the file's Units (``"m"``, ``"cm"`` or ``"mm"``).
      metadata: the header's keys and values as strings, plus ``"PathFileType"`` and ``"FileName"``
        from the first line.
    """

    times: np.ndarray
    frame_numbers: np.ndarray
    marker_names: tuple[str, ...]
    positions: np.ndarray
    data_rate: float
    camera_rate: float
    units_original: str
    metadata: dict

    def __post_init__(self):
        times = np.array(self.times, dtype=np.float64)
        frames = np.array(self.frame_numbers, dtype=np.int64)
        positions = np.array(self.positions, dtype=np.float64)
        names = tuple(self.marker_names)
        if times.ndim != 1 or frames.shape != times.shape:
            raise InputError(f"TrcData: times {times.shape} and frame_numbers {frames.shape} must be (T,)")
        if positions.shape != (times.shape[0], len(names), 3):
            raise InputError(
                f"TrcData.positions: expected shape (T, M, 3) = ({times.shape[0]}, {len(names)}, 3), "
                f"got {positions.shape}"
            )
        for array in (times, frames, positions):
            array.flags.writeable = False
        object.__setattr__(self, "times", times)
        object.__setattr__(self, "frame_numbers", frames)
        object.__setattr__(self, "positions", positions)
        object.__setattr__(self, "marker_names", names)
        object.__setattr__(self, "metadata", dict(self.metadata))


def read_trc(path: str | os.PathLike, z_up: bool = False) -> TrcData:
    """Read a .trc marker file; positions come back in metres.

    Args:
      path: the .trc file.
      z_up: return positions in MuJoCo's Z-up frame instead of the file's (OpenSim's) Y-up frame.

    A marker with any empty or NaN coordinate in a frame is missing in that frame: all three
    of its coordinates become NaN, as OpenSim's TRCFileAdapter reads it.

    Raises:
      InputError: naming the file and line for a malformed header, NumMarkers disagreeing with the
        marker labels, unknown Units, a row with fewer than 2 + 3 x NumMarkers columns, a
        non-numeric or infinite value, a NaN time, or frame numbers or times that do not strictly
        increase. NumFrames disagreeing with the rows is a warning (OpenSim reads the rows too).
    """
    path = Path(path)
    lines = read_text_lines(path)
    if len(lines) < 5:
        raise InputError(f"{path}: {len(lines)} lines; a .trc file needs 5 header lines before its data")
    metadata = _parse_first_line(path, lines[0])
    metadata.update(_parse_header(path, lines[1], lines[2]))

    units = metadata["Units"]
    if units not in _UNIT_SCALE:
        raise InputError(f"{path}, line 3: Units={units!r}; expected one of {sorted(_UNIT_SCALE)}")
    num_markers = _header_number(path, metadata, "NumMarkers", int)
    num_frames = _header_number(path, metadata, "NumFrames", int)
    data_rate = _header_number(path, metadata, "DataRate", float)
    camera_rate = data_rate
    if "CameraRate" in metadata:
        camera_rate = _header_number(path, metadata, "CameraRate", float)

    label_cells = lines[3].rstrip("\r\n").split("\t")
    if [c.strip().lower() for c in label_cells[:2]] != ["frame#", "time"]:
        raise InputError(f"{path}, line 4: expected the labels 'Frame#' and 'Time' then the marker names")
    names = tuple(c.strip() for c in label_cells[2:] if c.strip())
    if len(names) != num_markers:
        raise InputError(f"{path}, line 4: {len(names)} marker labels but NumMarkers={num_markers} (line 3)")
    if len(set(names)) != len(names):
        duplicates = sorted({n for n in names if names.count(n) > 1})
        raise InputError(f"{path}, line 4: duplicate marker labels {duplicates}")
    axis_labels = lines[4].split()
    if len(axis_labels) != 3 * num_markers:
        raise InputError(
            f"{path}, line 5: {len(axis_labels)} coordinate labels (X1 Y1 Z1 ...); expected {3 * num_markers}"
        )

    width = 2 + 3 * num_markers
    frames, times, rows, row_lines = [], [], [], []
    for i in range(5, len(lines)):
        if not lines[i].strip():
            continue
        lineno = i + 1
        cells = _split_row(lines[i])
        if len(cells) < width:
            raise InputError(
                f"{path}, line {lineno}: {len(cells)} columns; expected {width} (Frame#, Time, 3 per marker)"
            )
        if any(c.strip() for c in cells[width:]):
            raise InputError(
                f"{path}, line {lineno}: {len(cells)} columns; expected {width} for NumMarkers={num_markers}"
            )
        frame = _parse_number(path, lineno, "Frame#", cells[0], allow_empty=False)
        if not (np.isfinite(frame) and frame == int(frame) and 0 <= frame <= _MAX_FRAME):
            raise InputError(f"{path}, line {lineno}, column 'Frame#': {cells[0]!r} is not a whole number "
                             f"from 0 to {_MAX_FRAME}")
        if frames and frame <= frames[-1]:
            raise InputError(f"{path}, line {lineno}, column 'Frame#': frame {int(frame)} follows frame "
                             f"{frames[-1]} (line {row_lines[-1]}); frame numbers must strictly increase")
        frames.append(int(frame))
        times.append(_parse_number(path, lineno, "Time", cells[1], allow_empty=False, allow_nan=False))
        rows.append(_parse_values(path, lineno, names, cells[2:width]))
        row_lines.append(lineno)

    times_arr = np.array(times, dtype=np.float64)
    check_increasing_rows(path, times_arr, row_lines)
    if len(rows) != num_frames:
        # OpenSim's TRCFileAdapter reads the rows there are (Pose2Sim's filtered files say one too many).
        warnings.warn(f"{path}: NumFrames={num_frames} (line 3) but the file has {len(rows)} data rows; "
                      "reading the rows", stacklevel=2)

    positions = np.array(rows, dtype=np.float64).reshape(len(rows), num_markers, 3)
    positions[np.isnan(positions).any(axis=-1)] = np.nan
    positions = positions * _UNIT_SCALE[units]
    if z_up:
        positions = y_up_to_z_up(positions)
    return TrcData(
        times=times_arr,
        frame_numbers=np.array(frames, dtype=np.int64),
        marker_names=names,
        positions=positions,
        data_rate=data_rate,
        camera_rate=camera_rate,
        units_original=units,
        metadata=metadata,
    )


def write_trc(
    path: str | os.PathLike,
    times: np.ndarray,
    marker_names: Sequence[str],
    positions: np.ndarray,
    units: str = "m",
    z_up_input: bool = False,
    data_rate: float | None = None,
) -> Path:
    """Write a .trc marker file (PathFileType 4, the eight standard header keys, frames from 1).

    Args:
      times: (T,) seconds, strictly increasing.
      marker_names: (M,) marker labels.
      positions: (T, M, 3) metres; NaN marks a missing marker (written as ``NaN``).
      units: the file's units, ``"m"``, ``"cm"`` or ``"mm"``.
      z_up_input: ``positions`` are in MuJoCo's Z-up frame; they are written in OpenSim's Y-up frame.
      data_rate: frames per second; by default 1 / (median time step). Needed for a single frame.

    Times are written with at least 6 decimals and values at full float64 precision.
    """
    path = Path(path)
    times = np.asarray(times, dtype=np.float64)
    names = tuple(str(n) for n in marker_names)
    positions = np.asarray(positions, dtype=np.float64)
    if units not in _UNIT_SCALE:
        raise InputError(f"units: {units!r}; expected one of {sorted(_UNIT_SCALE)}")
    if times.ndim != 1:
        raise InputError(f"times: expected shape (T,), got {times.shape}")
    if positions.shape != (times.shape[0], len(names), 3):
        raise InputError(
            f"positions: expected shape (T, M, 3) = ({times.shape[0]}, {len(names)}, 3), got {positions.shape}"
        )
    for name in names:
        if not name or "\t" in name or name != name.strip():
            raise InputError(f"marker_names: {name!r} is empty, has a tab or surrounding whitespace")
    if len(set(names)) != len(names):
        raise InputError(f"marker_names: duplicate labels in {list(names)}")
    check_times_argument(times)
    if data_rate is None:
        if times.shape[0] < 2:
            raise InputError("data_rate: needed when there are fewer than two frames")
        data_rate = 1.0 / float(np.median(np.diff(times)))
    if not (np.isfinite(data_rate) and data_rate > 0):
        raise InputError(f"data_rate: {data_rate!r}; expected a positive number of frames per second")

    if z_up_input:
        positions = z_up_to_y_up(positions)
    values = positions / _UNIT_SCALE[units]
    num_frames, num_markers = values.shape[:2]
    rate = np.format_float_positional(float(data_rate), unique=True, trim="-")
    header_values = (rate, rate, str(num_frames), str(num_markers), units, rate, "1", str(num_frames))
    lines = [
        "\t".join(("PathFileType", "4", "(X/Y/Z)", path.name)),
        "\t".join(_HEADER_KEYS),
        "\t".join(header_values),
        "\t".join(["Frame#", "Time"] + [f"{n}\t\t" for n in names]).rstrip("\t"),
        "\t".join(["", ""] + [f"{axis}{k + 1}" for k in range(num_markers) for axis in "XYZ"]),
        "",
    ]
    for index, (t, row) in enumerate(zip(times, values.reshape(num_frames, -1))):
        cells = [str(index + 1), np.format_float_positional(t, unique=True, trim="k", min_digits=6)]
        cells += [_format_value(float(v)) for v in row]
        lines.append("\t".join(cells))
    with atomic_write(path) as f:
        f.write("\n".join(lines) + "\n")
    return path


def _format_value(value: float) -> str:
    # repr is the shortest text that reads back to the same float64; OpenSim spells NaN "nan".
    return "NaN" if np.isnan(value) else repr(value)


def _split_row(line: str) -> list[str]:
    # Tabs keep empty cells (missing markers) in place; files without tabs are whitespace-separated.
    line = line.rstrip("\r\n")
    return line.split("\t") if "\t" in line else line.split()


def _parse_first_line(path: Path, line: str) -> dict:
    cells = line.split("\t") if "\t" in line else line.split()
    if not cells or cells[0].strip() != "PathFileType":
        raise InputError(f"{path}, line 1: expected 'PathFileType' then 4, (X/Y/Z) and the file name")
    metadata = {"PathFileType": cells[1].strip() if len(cells) > 1 else ""}
    if len(cells) > 3:
        metadata["FileName"] = cells[3].strip()
    return metadata


def _parse_header(path: Path, key_line: str, value_line: str) -> dict:
    keys = [k.strip() for k in key_line.split("\t")] if "\t" in key_line else key_line.split()
    values = [v.strip() for v in value_line.split("\t")] if "\t" in value_line else value_line.split()
    while keys and not keys[-1]:
        keys.pop()
    if len(values) < len(keys):
        raise InputError(f"{path}, line 3: {len(values)} header values for the {len(keys)} keys of line 2")
    header = dict(zip(keys, values))
    missing = [k for k in ("DataRate", "NumFrames", "NumMarkers", "Units") if k not in header]
    if missing:
        raise InputError(f"{path}, line 2: missing header keys {missing}; expected {list(_HEADER_KEYS)}")
    return header


def _header_number(path: Path, metadata: dict, key: str, kind: type):
    text = metadata[key]
    try:
        value = kind(text)
    except ValueError:
        expected = "an integer" if kind is int else "a number"
        raise InputError(f"{path}, line 3: {key}={text!r}; expected {expected}") from None
    if kind is float and not (np.isfinite(value) and value > 0):
        raise InputError(f"{path}, line 3: {key}={text!r}; expected a positive number")
    if kind is int and value < 0:
        raise InputError(f"{path}, line 3: {key}={text!r}; expected a count of 0 or more")
    return value


def _parse_values(path: Path, lineno: int, names: tuple[str, ...], cells: list[str]) -> np.ndarray:
    """A row's marker coordinates (3M,): empty or NaN cells are NaN. NumPy converts the row at
    once; a row it cannot convert, or holding an infinity, is read cell by cell for the error
    naming the cell (:func:`_parse_number`)."""
    row = None
    try:
        row = np.array(cells, dtype=np.float64)
    except ValueError:  # empty cells, most likely
        try:
            row = np.array([c if c.strip() else "nan" for c in cells], dtype=np.float64)
        except ValueError:
            pass
    if row is None or np.isinf(row).any():
        row = np.array([_parse_number(path, lineno, f"{names[k // 3]} {'XYZ'[k % 3]}", cell)
                        for k, cell in enumerate(cells)])
    return row


def _parse_number(path: Path, lineno: int, column: str, cell: str, allow_empty: bool = True,
                  allow_nan: bool = True) -> float:
    """The cell's value; an empty or NaN cell is a missing marker coordinate (NaN) where allowed.
    Infinities are never allowed."""
    cell = cell.strip()
    if not cell and allow_empty:
        return float("nan")
    try:
        value = float(cell)
    except ValueError:
        raise InputError(f"{path}, line {lineno}, column {column!r}: {cell!r} is not a number") from None
    if np.isinf(value) or (np.isnan(value) and not allow_nan):
        raise InputError(f"{path}, line {lineno}, column {column!r}: {cell!r} is not a finite number")
    return value
