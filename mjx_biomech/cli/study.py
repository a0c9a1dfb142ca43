"""The study file of ``mjx-biomech batch`` and the manifest that lets a rerun skip finished subjects.

A study is a TOML file listing subjects. A subject with ``keypoints`` is markerless and runs as
``mjx-biomech fit``; one with ``static`` or ``trials`` (.trc) is marker-based and runs as
``mjx-biomech scale``. Every other key of a subject is one of that command's options, named as
its long option (``marker_set`` or ``marker-set``; ``true`` for a flag). The tables
``[markerless]`` and ``[marker_based]`` give options every subject of that kind starts from::

    [markerless]
    marker_set = "blazepose33"
    steps = 4000

    [marker_based]
    model = "models/gait2392.osim"
    markers = "models/gait2392_Scale_MarkerSet.xml"

    [[subject]]
    name = "s01"
    calibration = "s01/calibration.toml"
    keypoints = ["s01/walk1.npz", "s01/walk2.npz"]

    [[subject]]
    name = "s02"
    static = "s02/static.trc"
    trials = ["s02/walk1.trc"]
    mass = 72.5

Paths are relative to the study file. The output folder (``--out``) is the batch's, one folder per
subject named after it; ``checkpoint_dir`` is not a study option.

A subject's digest hashes the contents of its input files, its resolved options (defaults
included) and the package version; files a setup XML names inside itself are not hashed. The
manifest (``manifest.json``, written last and atomically in the subject's folder) records the
digest, the outputs and the summary rows: a subject whose manifest matches and whose outputs
all exist is done.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from mjx_biomech.errors import InputError

MARKERLESS, MARKER_BASED = "markerless", "marker_based"
# kind -> the subcommand module that runs it
COMMANDS = {MARKERLESS: "mjx_biomech.cli.fit", MARKER_BASED: "mjx_biomech.cli.scale"}
# kind -> options naming input files (hashed by content), with whether they take several
FILE_OPTIONS = {
    MARKERLESS: {"calibration": False, "keypoints": True, "model": False},
    MARKER_BASED: {"model": False, "static": False, "trials": True, "markers": False, "setup": False, "ik_setup": False},
}
# Options the batch sets itself.
_RESERVED = ("out", "checkpoint_dir")
# A subject's name is its output folder's.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
MANIFEST = "manifest.json"
ERROR_FILE = "error.txt"
_MANIFEST_FORMAT = "mjx_biomech.batch/1"


@dataclass(frozen=True)
class Subject:
    """One subject of a study: its ``name`` (and output folder), ``kind`` (:data:`MARKERLESS` or
    :data:`MARKER_BASED`), the command-line ``argv`` of its subcommand (without ``--out``) and its
    ``args`` as that subcommand parses them (``out`` None)."""

    name: str
    kind: str
    argv: tuple[str, ...]
    args: argparse.Namespace

    def with_out(self, folder: Path) -> argparse.Namespace:
        """The subcommand's arguments, writing into ``folder``."""
        return argparse.Namespace(**{**vars(self.args), "out": str(folder)})


@dataclass(frozen=True)
class Study:
    """A study file: its ``path`` and its ``subjects`` in the file's order."""

    path: Path
    subjects: tuple[Subject, ...]


def _is_named_model(option: str, value: str) -> bool:
    """``myo_sim:NAME`` names a model, not a file."""
    return option == "model" and str(value).startswith("myo_sim:")


class _SubjectParser(argparse.ArgumentParser):
    """The subcommand's parser, whose usage errors name the study file and the subject."""

    def __init__(self, where: str, **kwargs):
        super().__init__(add_help=False, exit_on_error=False, **kwargs)
        self.where = where

    def error(self, message: str):
        raise InputError(f"{self.where}: {message}")


def _parser(kind: str, where: str) -> argparse.ArgumentParser:
    import importlib

    parser = _SubjectParser(where, prog=f"mjx-biomech {'fit' if kind == MARKERLESS else 'scale'}")
    importlib.import_module(COMMANDS[kind]).add_arguments(parser)
    for action in parser._actions:
        if action.dest == "out":
            action.required = False  # the batch's output folder
    return parser


def _argv(parser: argparse.ArgumentParser, options: dict, where: str) -> list[str]:
    """``options`` (study key -> TOML value) as the subcommand's command line."""
    actions = {a.dest: a for a in parser._actions}
    positional, flags = [], []
    for key, value in options.items():
        dest = key.replace("-", "_")
        action = actions.get(dest)
        if action is None or dest in _RESERVED:
            known = sorted(d for d, a in actions.items() if d not in _RESERVED and d != "help")
            raise InputError(f"{where}: unknown option {key!r} (expected one of {', '.join(known)})")
        if isinstance(value, dict):
            raise InputError(f"{where}: option {key!r} is a table; expected a value or a list")
        switch = action.nargs == 0
        if switch:
            if not isinstance(value, bool):
                raise InputError(f"{where}: option {key!r} is a switch; expected true or false, got {value!r}")
            if isinstance(action, argparse.BooleanOptionalAction):
                flags.append(action.option_strings[0] if value else action.option_strings[1])
            elif value:
                flags.append(action.option_strings[0])
            continue
        several = action.nargs in ("+", "*") or isinstance(action.nargs, int) or isinstance(action, argparse._AppendAction)
        values = value if isinstance(value, list) else [value]
        if isinstance(value, list) and not several:
            raise InputError(f"{where}: option {key!r} takes one value, got a list")
        if any(isinstance(v, (bool, dict, list)) for v in values):
            raise InputError(f"{where}: option {key!r} expects {'values' if several else 'a value'}, got {value!r}")
        words = [str(v) for v in values]
        if not action.option_strings:
            positional += words
        elif isinstance(action, argparse._AppendAction):
            flags += [f"{action.option_strings[0]}={w}" for w in words]
        elif several:
            flags += [action.option_strings[0], *words]
        else:
            flags.append(f"{action.option_strings[0]}={words[0]}")
    return positional + flags


def _resolve_files(kind: str, options: dict, base: Path) -> dict:
    """``options`` with the input files' paths made relative to ``base`` (the study's folder)."""
    out = dict(options)
    for key, value in options.items():
        option = key.replace("-", "_")
        if option not in FILE_OPTIONS[kind] or not isinstance(value, (str, list)):
            continue
        values = value if isinstance(value, list) else [value]
        resolved = [v if not isinstance(v, str) or _is_named_model(option, v) else str(base / v) for v in values]
        out[key] = resolved if isinstance(value, list) else resolved[0]
    return out


def _kind(entry: dict, where: str) -> str:
    keys = {k.replace("-", "_") for k in entry}
    markerless, marker_based = "keypoints" in keys, bool(keys & {"static", "trials"})
    if markerless == marker_based:
        raise InputError(f"{where}: give either keypoints (a markerless subject) or static/trials (.trc, a marker-based "
                         "subject)" + (", not both" if markerless else ""))
    return MARKERLESS if markerless else MARKER_BASED


def read_study(path: str | Path) -> Study:
    """The study in the TOML file ``path`` (see the module docstring). A malformed file, table or
    subject raises :class:`InputError` naming the file and the entry; a missing input file does
    not (that subject fails alone when the batch runs). Input paths become absolute, so that Ray
    workers, whatever their working folder, find them."""
    path = Path(path).absolute()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{path}: not valid TOML ({e})") from None
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text ({e})") from None
    unknown = sorted(set(data) - {MARKERLESS, MARKER_BASED, "subject"})
    if unknown:
        raise InputError(f"{path}: unknown table(s) {', '.join(unknown)} (expected [markerless], [marker_based] and "
                         "[[subject]] entries)")
    defaults = {}
    for kind in (MARKERLESS, MARKER_BASED):
        table = data.get(kind, {})
        if not isinstance(table, dict):
            raise InputError(f"{path}: [{kind}] must be a table of options")
        defaults[kind] = _resolve_files(kind, table, path.parent)
    entries = data.get("subject")
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise InputError(f"{path}: expected one or more [[subject]] tables")
    subjects, seen = [], set()
    for number, entry in enumerate(entries, 1):
        name = entry.get("name")
        where = f"{path}: subject {name!r}" if isinstance(name, str) else f"{path}: subject #{number}"
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise InputError(f"{where}: needs a name of letters, digits, '.', '_' or '-' (its output folder)")
        if name in seen:
            raise InputError(f"{where}: a second subject of that name")
        seen.add(name)
        own = {k: v for k, v in entry.items() if k != "name"}
        kind = _kind(own, where)
        options = {**defaults[kind], **_resolve_files(kind, own, path.parent)}
        parser = _parser(kind, where)
        argv = _argv(parser, options, where)
        try:
            args = parser.parse_args(argv)
        except argparse.ArgumentError as e:
            raise InputError(f"{where}: {e}") from None
        subjects.append(Subject(name, kind, tuple(argv), args))
    return Study(path, tuple(subjects))


def digest(subject: Subject) -> str:
    """SHA-256 of the subject's input files' contents, its resolved options and the package
    version. Raises ``OSError`` when an input file cannot be read."""
    import mjx_biomech

    files = set(FILE_OPTIONS[subject.kind])
    settings = {k: v for k, v in sorted(vars(subject.args).items()) if k not in files and k not in _RESERVED}
    contents = {}
    for option, several in FILE_OPTIONS[subject.kind].items():
        value = getattr(subject.args, option)
        values = value if several else [value]
        contents[option] = [None if v is None else v if _is_named_model(option, v) else _file_hash(Path(v)) for v in values]
    text = json.dumps({"version": mjx_biomech.__version__, "kind": subject.kind, "settings": settings, "files": contents},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(folder: Path, subject: Subject, subject_digest: str, record: dict) -> dict:
    """Write the manifest of a finished subject (atomically; the last file written): its digest,
    the files in ``folder`` (its outputs) and ``record`` (seconds, memory, summary rows).
    Returns the manifest."""
    from mjx_biomech.io import write_text_atomic

    outputs = sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                     if p.is_file() and p.name not in (MANIFEST, ERROR_FILE))
    manifest = {"format": _MANIFEST_FORMAT, "subject": subject.name, "kind": subject.kind, "digest": subject_digest,
                "outputs": outputs, **record}
    write_text_atomic(folder / MANIFEST, json.dumps(manifest, indent=1))
    return manifest


def finished(folder: Path, subject_digest: str) -> dict | None:
    """The manifest of a subject done with these inputs and settings (``subject_digest``) whose
    outputs all exist in ``folder``; None when it must run (again)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != _MANIFEST_FORMAT:
        return None
    if manifest.get("digest") != subject_digest:
        return None
    if not all((folder / name).is_file() for name in manifest.get("outputs", [])):
        return None
    return manifest
