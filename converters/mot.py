"""OpenSim motion and storage files (.mot, .sto): read and write coordinate tables.

Two header styles exist and both are read:

- OpenSim 3 / SIMM (``Storage``): a first line with the table's name, then ``version=1``,
  ``nRows=``, ``nColumns=`` (time included), ``inDegrees=``, free description lines, ``endheader``.
- OpenSim 4 (``STOFileAdapter``): ``key=value`` lines such as ``inDegrees=``, ``DataType=double``,
  ``version=3``, then ``endheader``.

Either is followed by one line of column labels starting with ``time`` and one row per frame.
A label that repeats (OpenSim's own IK output repeats its ground-reaction columns) keeps its
name on its first column; later columns become ``<label>_2``, ``<label>_3``, ... (the first
such name not already a label), with a warning. A value may be ``NaN`` (missing), never
infinite; times are finite and strictly increase.
Degrees appear only in files; inside the project rotational coordinates are radians and
translations metres (``write_mot`` takes internal units and says which columns rotate, since a
file cannot tell a rotation from a translation or a coupled coordinate).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np

from mjx_biomech.errors import InputError
from mjx_biomech.io import atomic_write, check_increasing_rows, check_times_argument, read_text_lines

__all__ = ["MotionTable", "read_mot", "read_mot_internal", "write_mot", "write_sto"]


@dataclasses.dataclass(frozen=True)
class MotionTable:
    """A table of values over time, as stored in a .mot/.sto file.

    Attributes:
      times: (T,) seconds, strictly increasing.
      names: (N,) column labels, the time column excluded.
      values: (T, N) as in the file: rotational columns in degrees when ``in_degrees``.
      in_degrees: the file's ``inDegrees`` flag (``False`` when the file has none, as in OpenSim).
      metadata: header ``key=value`` pairs (strings); ``"name"`` holds a SIMM-style first line and
        ``"description"`` any other free header lines, joined by newlines.
    """

    times: np.ndarray
    names: tuple[str, ...]
    values: np.ndarray
    in_degrees: bool
    metadata: dict

    def __post_init__(self):
        times = np.array(self.times, dtype=np.float64)
        values = np.array(self.values, dtype=np.float64)
        names = tuple(self.names)
        if times.ndim != 1:
            raise InputError(f"MotionTable.times: expected shape (T,), got {times.shape}")
        if values.shape != (times.shape[0], len(names)):
            raise InputError(
                f"MotionTable.values: expected shape (T, N) = ({times.shape[0]}, {len(names)}), "
                f"got {values.shape}"
            )
        # Frozen fields should not change behind the dataclass's back either.
        times.flags.writeable = False
        values.flags.writeable = False
        object.__setattr__(self, "times", times)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "metadata", dict(self.metadata))

    def column(self, name: str) -> np.ndarray:
        """The (T,) values of column ``name``, in file units."""
        try:
            return self.values[:, self.names.index(name)]
        except ValueError:
            raise InputError(f"no column {name!r}; columns are {list(self.names)}") from None

    def to_internal(self, rotational: Sequence[bool] | Collection[str]) -> MotionTable:
        """The same table in internal units: rotational columns in radians, ``in_degrees=False``.

        Args:
          rotational: a (N,) boolean mask over ``names``, or the names of the rotational columns.
        """
        if not self.in_degrees:
            return self
        mask = _rotational_mask(self.names, rotational)
        values = np.where(mask[None, :], np.deg2rad(self.values), self.values)
        return dataclasses.replace(self, values=values, in_degrees=False)


def read_mot(path: str | os.PathLike) -> MotionTable:
    """Read an OpenSim .mot or .sto file (OpenSim 3/SIMM or OpenSim 4 header).

    Rows may be separated by tabs or any whitespace. Values are returned as stored (see
    ``read_mot_internal`` for radians).

    Raises:
      InputError: naming the file, and the line where it applies, for a missing ``endheader``,
        a label line not starting with ``time``, a row of the wrong length, a non-numeric or
        infinite value, times that are NaN or do not strictly increase, or ``nRows``/``nColumns``
        disagreeing with the data.
    """
    path = Path(path)
    lines = read_text_lines(path)
    end = next((i for i, line in enumerate(lines) if line.strip().lower() == "endheader"), None)
    if end is None:
        raise InputError(f"{path}: no 'endheader' line; an OpenSim .mot/.sto header must end with one")
    metadata = _parse_header(path, lines[:end])
    data_type = metadata.get("DataType", "double")
    if data_type != "double":
        raise InputError(f"{path}: DataType={data_type}; only tables of doubles (DataType=double) are read")

    label_index = next((i for i in range(end + 1, len(lines)) if lines[i].strip()), None)
    if label_index is None:
        raise InputError(f"{path}: no column-label line after 'endheader' (line {end + 1})")
    labels = _split_labels(path, label_index + 1, lines[label_index])
    if labels[0].lower() != "time":
        raise InputError(
            f"{path}, line {label_index + 1}: the first column label is {labels[0]!r}; expected 'time'"
        )

    rows: list[list[float]] = []
    row_lines: list[int] = []
    for i in range(label_index + 1, len(lines)):
        cells = lines[i].split()
        if not cells:
            continue
        lineno = i + 1
        if len(cells) != len(labels):
            raise InputError(
                f"{path}, line {lineno}: {len(cells)} values; expected {len(labels)} (one per column label)"
            )
        row = [_parse_float(path, lineno, label, cell) for label, cell in zip(labels, cells)]
        if np.isnan(row[0]):
            raise InputError(f"{path}, line {lineno}, column {labels[0]!r}: {cells[0]!r} is not a time")
        rows.append(row)
        row_lines.append(lineno)

    data = np.array(rows, dtype=np.float64).reshape(len(rows), len(labels))
    check_increasing_rows(path, data[:, 0], row_lines)
    _check_count(path, metadata, "nRows", len(rows), "data rows")
    _check_count(path, metadata, "nColumns", len(labels), "column labels (time included)")
    return MotionTable(
        times=data[:, 0],
        names=tuple(labels[1:]),
        values=data[:, 1:],
        in_degrees=_parse_bool(path, metadata.get("inDegrees", "no")),
        metadata=metadata,
    )


def read_mot_internal(path: str | os.PathLike, rotational: Sequence[bool] | Collection[str]) -> MotionTable:
    """Read a .mot/.sto file with rotational columns in radians (``in_degrees=False``).

    Args:
      rotational: a (N,) boolean mask over the file's columns (time excluded), or the names of the
        rotational columns.
    """
    return read_mot(path).to_internal(rotational)


def write_mot(
    path: str | os.PathLike,
    times: np.ndarray,
    names: Sequence[str],
    values_internal: np.ndarray,
    rotational: Sequence[bool] | Collection[str],
    in_degrees: bool = True,
    name: str | None = None,
) -> Path:
    """Write an OpenSim .mot file (``Storage`` header: name, version=1, nRows, nColumns, inDegrees).

    Args:
      times: (T,) seconds, strictly increasing.
      names: (N,) column labels (OpenSim coordinate names).
      values_internal: (T, N) radians for rotational columns, metres (or unitless) otherwise.
      rotational: a (N,) boolean mask, or the names of the rotational columns. Only these are
        converted to degrees; translations and coupled coordinates keep their values.
      in_degrees: write rotational columns in degrees (OpenSim's convention for .mot).
      name: the first header line; defaults to the file's stem.

    Values are written at full float64 precision (shortest exact representation), so reading the
    file back gives translations and times bit for bit and rotations to rounding of the unit change.
    """
    path = Path(path)
    times, names, values = _check_table(times, names, values_internal, rotational, in_degrees)
    header = [
        name if name is not None else path.stem,
        "version=1",
        f"nRows={len(times)}",
        f"nColumns={len(names) + 1}",
        f"inDegrees={'yes' if in_degrees else 'no'}",
        "endheader",
    ]
    _write_table(path, header, times, names, values)
    return path


def write_sto(
    path: str | os.PathLike,
    times: np.ndarray,
    names: Sequence[str],
    values_internal: np.ndarray,
    rotational: Sequence[bool] | Collection[str],
    in_degrees: bool = False,
) -> Path:
    """Write an OpenSim 4 .sto file (``STOFileAdapter`` header: inDegrees, DataType, version=3).

    Arguments as for ``write_mot``; OpenSim 4 stores .sto tables in radians by default.
    """
    path = Path(path)
    times, names, values = _check_table(times, names, values_internal, rotational, in_degrees)
    header = [f"inDegrees={'yes' if in_degrees else 'no'}", "DataType=double", "version=3", "endheader"]
    _write_table(path, header, times, names, values)
    return path


def _check_table(times, names, values_internal, rotational, in_degrees):
    """Validate a table to write; return (times (T,), names, values (T, N) in file units)."""
    times = np.asarray(times, dtype=np.float64)
    names = tuple(str(n) for n in names)
    values = np.asarray(values_internal, dtype=np.float64)
    if times.ndim != 1:
        raise InputError(f"times: expected shape (T,), got {times.shape}")
    if values.shape != (times.shape[0], len(names)):
        raise InputError(
            f"values_internal: expected shape (T, N) = ({times.shape[0]}, {len(names)}), got {values.shape}"
        )
    for label in names:
        if not label or any(c.isspace() for c in label):
            raise InputError(f"names: column label {label!r} is empty or contains whitespace")
    if len(set(names)) != len(names):
        raise InputError(f"names: duplicate column labels in {list(names)}")
    check_times_argument(times)
    mask = _rotational_mask(names, rotational)
    if in_degrees:
        values = np.where(mask[None, :], np.rad2deg(values), values)
    return times, names, values


def _write_table(path: Path, header: list[str], times: np.ndarray, names: tuple[str, ...], values: np.ndarray):
    """Header, label line, then one tab-separated row per time; floats in their shortest exact text."""
    with atomic_write(path) as f:
        f.write("\n".join(header) + "\n")
        f.write("\t".join(("time",) + names) + "\n")
        rows = np.column_stack([np.asarray(times, np.float64), np.asarray(values, np.float64).reshape(len(times), -1)])
        # tolist() makes Python floats, whose repr is the shortest text that reads back exactly.
        f.write("".join("\t".join(map(repr, row)) + "\n" for row in rows.tolist()))


def _rotational_mask(names: tuple[str, ...], rotational: Sequence[bool] | Collection[str]) -> np.ndarray:
    """(N,) bool mask from a mask or a collection of column names."""
    items = list(rotational)
    if items and all(isinstance(x, (bool, np.bool_)) for x in items):
        if len(items) != len(names):
            raise InputError(f"rotational: a mask of {len(items)} flags for {len(names)} columns")
        return np.array(items, dtype=bool)
    unknown = [x for x in items if x not in names]
    if unknown:
        raise InputError(f"rotational: {unknown} are not columns; columns are {list(names)}")
    return np.array([n in set(items) for n in names], dtype=bool)


def _parse_header(path: Path, lines: list[str]) -> dict:
    """``key=value`` pairs of the header; a leading non-pair line is the name, others description."""
    metadata: dict = {}
    description = []
    for i, line in enumerate(lines):
        text = line.strip()
        if not text:
            continue
        key, sep, value = text.partition("=")
        if sep and key.strip() and not any(c.isspace() for c in key.strip()):
            metadata[key.strip()] = value.strip()
        elif i == 0:
            metadata["name"] = text
        else:
            description.append(text)
    if description:
        metadata["description"] = "\n".join(description)
    return metadata


def _split_labels(path: Path, lineno: int, line: str) -> list[str]:
    """The column labels, a repeated label made distinct (see ``read_mot``) with a warning."""
    # OpenSim 4 separates labels by tabs (a label may then hold spaces); SIMM files by any whitespace.
    labels = [s.strip() for s in line.strip().split("\t")] if "\t" in line else line.split()
    if any(not s for s in labels):
        raise InputError(f"{path}, line {lineno}: an empty column label between tabs")
    seen = set(labels)
    if len(seen) == len(labels):
        return labels
    distinct, renamed = [], []
    for label in labels:
        if label in distinct:
            k = 2
            while f"{label}_{k}" in seen:
                k += 1
            renamed.append(f"{label} -> {label}_{k}")
            label = f"{label}_{k}"
            seen.add(label)
        distinct.append(label)
    warnings.warn(f"{path}, line {lineno}: repeated column labels renamed ({', '.join(renamed)}); "
                  "the first column of a label keeps it", stacklevel=3)
    return distinct


def _parse_float(path: Path, lineno: int, label: str, cell: str) -> float:
    """The cell's value: a number or NaN (a missing value, as OpenSim writes it), never infinite."""
    try:
        value = float(cell)
    except ValueError:
        raise InputError(f"{path}, line {lineno}, column {label!r}: {cell!r} is not a number") from None
    if np.isinf(value):
        raise InputError(f"{path}, line {lineno}, column {label!r}: {cell!r} is not a finite number")
    return value


def _parse_bool(path: Path, text: str) -> bool:
    value = text.strip().lower()
    if value in ("yes", "true", "1"):
        return True
    if value in ("no", "false", "0"):
        return False
    raise InputError(f"{path}: inDegrees={text}; expected 'yes' or 'no'")


def _check_count(path: Path, metadata: dict, key: str, actual: int, what: str):
    if key not in metadata:
        return
    try:
        declared = int(metadata[key])
    except ValueError:
        raise InputError(f"{path}: {key}={metadata[key]}; expected an integer") from None
    if declared != actual:
        raise InputError(f"{path}: the header says {key}={declared} but the file has {actual} {what}")
