"""Traced programs kept across processes, so that a second run skips JAX's tracing and lowering.

JAX's persistent compilation cache (which the command line turns on) saves the *compilation* of a
program, but finding a program's key means tracing the Python function and lowering it to
StableHLO first: for the demo's large programs (the LM assembly, the uncertainty's
linearisation) that costs more than loading them. :func:`cached_jit` is ``equinox.filter_jit``
that, while :func:`enable` has given it a folder, also keeps each program it traces as a
serialized :mod:`jax.export` module and, in a later process, calls that module instead of
tracing the function again; the call is then compiled (or loaded from JAX's cache) as usual.

A program is reused only under a key that holds everything its tracing depended on:

- the function (module and qualified name);
- the SHA-256 of every ``.py`` file of this project's packages (any edit makes new keys);
- the arguments' structure and every non-array argument (pickled in full: a model's static
  tables, the callables passed in, floats and flags), and each array's shape, dtype and weak
  type;
- the versions of jax, jaxlib, equinox, NumPy, SciPy, MuJoCo and optax, ``jax_enable_x64``, the
  default matmul precision, and the backend.

Anything that cannot be keyed that way runs through plain ``filter_jit``, never through a
guess: an argument that does not pickle (a closure, a lambda), a call under another
transformation (tracers among the arguments), a function whose program jax.export refuses
(host callbacks), or a file that does not load. ``stats`` counts what happened.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import io
import os
import pickle
import sys
import types
from collections import Counter
from pathlib import Path
from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp

from mjx_biomech.io import atomic_write

# This project's packages, whose source is part of every key, and the installed packages whose
# versions are (what a trace may depend on).
_PACKAGES = ("mjx_biomech", "converters", "env_registry", "assets")
_DEPENDENCIES = ("jax", "jaxlib", "equinox", "numpy", "scipy", "mujoco", "optax")
# Modules whose functions and classes may be keyed by name: ours and the versioned dependencies,
# and the standard library's that pickle and pytrees use.
_KEYED_MODULES = frozenset(_PACKAGES + _DEPENDENCIES + ("builtins", "copyreg", "collections", "functools", "types",
                                                        "enum", "typing", "dataclasses", "jax_plugins", "ml_dtypes"))
_FORMAT = 1  # bump when the file layout below changes
# "0", "false", "no" or "off" keeps traced programs out of the folder JAX's cache is in.
PROGRAM_CACHE_ENV = "MJX_BIOMECH_PROGRAM_CACHE"

_folder: Path | None = None
stats: Counter = Counter()  # "exported", "loaded", "memory", "fallback: <reason>"


def enable(folder: str | os.PathLike | None) -> None:
    """Keep traced programs in ``folder`` (created when first written); ``None`` turns it off, as
    does ``$MJX_BIOMECH_PROGRAM_CACHE=0``. The command line calls this with the ``programs``
    folder inside JAX's compilation cache folder whenever it turns that cache on."""
    global _folder
    off = os.environ.get(PROGRAM_CACHE_ENV, "").strip().lower() in ("0", "false", "no", "off")
    _folder = None if folder is None or off else Path(folder)


def enabled() -> bool:
    return _folder is not None


def folder() -> Path | None:
    """Where traced programs are kept; None while off."""
    return _folder


@functools.cache
def _source_digest() -> str:
    h = hashlib.sha256()
    for name in _PACKAGES:
        spec = importlib.util.find_spec(name)  # found, not imported (env_registry would import brax)
        for root in (spec.submodule_search_locations or []) if spec else []:
            for path in sorted(Path(root).rglob("*.py")):
                h.update(str(path.relative_to(root)).encode())
                h.update(path.read_bytes())
    return h.hexdigest()


@functools.cache
def _versions() -> tuple:
    out = []
    for name in _DEPENDENCIES:
        try:
            out.append((name, importlib.metadata.version(name)))
        except importlib.metadata.PackageNotFoundError:
            out.append((name, None))
    return tuple(out)


def _environment() -> tuple:
    return (
        _FORMAT,
        _source_digest(),
        _versions(),
        bool(jax.config.jax_enable_x64),
        str(jax.config.jax_default_matmul_precision),
        jax.default_backend(),
    )


class _KeyPickler(pickle.Pickler):
    """Pickles a key (never unpickled). What does not pickle stands in by its content: a MuJoCo
    ``MjSpec`` (a model keeps the spec it was compiled from) by its MJCF text, a read-only mapping
    by its items, a closure of this project's by its name and what it closed over; everything
    else pickles as usual, a compiled ``MjModel`` by its full binary content. Functions and
    classes from outside the keyed modules are refused."""

    def reducer_override(self, obj):
        if isinstance(obj, (types.FunctionType, type)):
            # Pickled by name: its code is in the key only where the source digest or a version
            # covers it. A function or class of the caller's own (a custom residual) is not.
            root = (getattr(obj, "__module__", None) or "").split(".")[0]
            if root not in _KEYED_MODULES:
                raise pickle.PicklingError(f"{obj.__qualname__} of module {root or '?'}, whose code the key does not cover")
            if isinstance(obj, types.FunctionType) and root in _PACKAGES and ("<locals>" in obj.__qualname__ or obj.__closure__):
                # One of this project's closures (a coordinate function built from an .osim): its
                # code is in the source digest, what it closed over is pickled here.
                cells = tuple(cell.cell_contents for cell in obj.__closure__ or ())
                return tuple, ((obj.__module__, obj.__qualname__, cells, obj.__defaults__, obj.__kwdefaults__),)
            return NotImplemented
        if isinstance(obj, types.ModuleType):  # numpy or jax.numpy closed over as ``xp``
            if obj.__name__.split(".")[0] not in _KEYED_MODULES:
                raise pickle.PicklingError(f"module {obj.__name__}, whose code the key does not cover")
            return str, (f"module {obj.__name__}",)
        mujoco = sys.modules.get("mujoco")
        if mujoco is not None and isinstance(obj, mujoco.MjSpec):
            return str, (obj.to_xml(),)
        if isinstance(obj, types.MappingProxyType):  # a model's read-only metadata
            return dict, (dict(obj),)
        return NotImplemented


def _key_bytes(key) -> bytes:
    buffer = io.BytesIO()
    _KeyPickler(buffer, protocol=5).dump(key)
    return buffer.getvalue()


def _aval(leaf) -> tuple:
    a = jax.typeof(leaf)
    return tuple(a.shape), str(a.dtype), bool(a.weak_type)


@functools.cache
def _prepare_linear_algebra() -> None:
    """jaxlib sets up its LAPACK kernels (and on GPU its hybrid eigensolver) the first time it
    lowers a call to one; a program loaded from a file is never lowered that way, and running
    its LAPACK call without that set-up crashes the process (a segmentation fault, jaxlib 0.9.2).
    Lowering, not compiling, a small function that uses them does the set-up."""
    matrix = jax.ShapeDtypeStruct((2, 2), jnp.float32)  # a shape, not an array: nothing runs
    jax.jit(lambda m: (jnp.linalg.cholesky(m), jnp.linalg.eig(m))).lower(matrix)


class _Program:
    """An exported program, compiled once for its argument types (ahead of time, so that
    arguments committed to the device and uncommitted ones run the same executable), and what
    turns its flat outputs back into the function's result."""

    def __init__(self, exported, out_tree, out_static):
        self.exported = exported
        self.out_tree = out_tree
        self.out_static = out_static
        self.compiled = None

    def compile(self, compiler_options: dict | None = None):
        return jax.jit(self.exported.call).lower(*self.exported.in_avals).compile(compiler_options=compiler_options)

    def __call__(self, leaves):
        if self.compiled is None:
            self.compiled = self.compile()
        out = jax.tree_util.tree_unflatten(self.out_tree, self.compiled(*leaves))
        return eqx.combine(out, self.out_static)


def _export(fun, static, dyn_tree, avals):
    holder = []

    def flat(*leaves):
        args, kwargs = eqx.combine(jax.tree_util.tree_unflatten(dyn_tree, leaves), static)
        out_dynamic, out_static = eqx.partition(fun(*args, **kwargs), eqx.is_array)
        out_leaves, out_tree = jax.tree_util.tree_flatten(out_dynamic)
        holder[:] = [out_tree, out_static]
        return out_leaves

    specs = [jax.ShapeDtypeStruct(shape, jnp.dtype(dtype), weak_type=weak) for shape, dtype, weak in avals]
    exported = jax.export.export(jax.jit(flat))(*specs)
    return exported, holder[0], holder[1]


def _program(fun, name: str, static_tree, static_leaves, dyn_tree, avals, static, closure=()) -> _Program | str:
    """The program for this key: loaded from the folder, else traced, exported and saved; or the
    reason it cannot be (a string)."""
    try:
        key = _key_bytes((name, static_tree, static_leaves, dyn_tree, avals, closure, _environment()))
    except Exception as e:  # noqa: BLE001 - whatever pickle refuses (closures, lambdas, locks)
        return f"arguments do not pickle ({type(e).__name__}: {str(e)[:120]})"
    path = _folder / f"{name.rsplit('.', 1)[-1]}-{hashlib.sha256(key).hexdigest()[:40]}.jaxprog"
    if path.is_file():
        try:
            blob, out_tree, out_static = pickle.loads(path.read_bytes())
            _prepare_linear_algebra()
            program = _Program(jax.export.deserialize(blob), out_tree, out_static)
            stats["loaded"] += 1
            return program
        except Exception:  # noqa: BLE001 - a damaged or foreign file: trace again and replace it
            pass
    try:
        exported, out_tree, out_static = _export(fun, static, dyn_tree, avals)
        payload = pickle.dumps((exported.serialize(), out_tree, out_static), protocol=5)
    except Exception as e:  # noqa: BLE001 - jax.export's refusals; plain filter_jit reports real errors
        return f"not exported ({type(e).__name__}: {str(e)[:200]})"
    try:
        with atomic_write(path, "wb") as f:
            f.write(payload)
    except OSError:
        pass  # an unwritable folder costs the next run its time, not this run its result
    stats["exported"] += 1
    return _Program(exported, out_tree, out_static)


def _leaves(args: tuple, kwargs: dict) -> list:
    """The array leaves of a call, as filter_jit traces them."""
    return jax.tree_util.tree_leaves(eqx.filter((args, kwargs), eqx.is_array))


def _split(args: tuple, kwargs: dict):
    """(array leaves, their structure and avals, the static rest, its leaves and structure) as
    filter_jit splits a call; None under a transformation (a tracer among the arrays: counted)."""
    dynamic, static = eqx.partition((args, kwargs), eqx.is_array)
    leaves, dyn_tree = jax.tree_util.tree_flatten(dynamic)
    if any(isinstance(leaf, jax.core.Tracer) for leaf in leaves):
        stats["fallback: under a transformation"] += 1
        return None
    static_leaves, static_tree = jax.tree_util.tree_flatten(static)
    return leaves, dyn_tree, tuple(_aval(leaf) for leaf in leaves), static, tuple(static_leaves), static_tree


def compile_closure(name: str, fun: Callable, args: tuple, closure: tuple,
                    compiler_options: dict | None = None) -> Callable:
    """``jax.jit(fun).lower(*args).compile(compiler_options=...)`` for a ``fun`` whose trace
    also reads what it closes over: ``closure`` must hold all of that (a model, marker indices;
    pickled into the key like a static argument), ``name`` names the function's code. While
    :func:`enable` has a folder the trace is kept and reused as :func:`cached_jit` keeps it.
    Returns a callable taking arguments of the structure and types of ``args``."""
    def plain():
        return jax.jit(fun).lower(*args).compile(compiler_options=compiler_options)

    split = None if _folder is None else _split(args, {})
    if split is None:
        return plain()
    _, dyn_tree, avals, static, static_leaves, static_tree = split
    program = _program(fun, name, static_tree, static_leaves, dyn_tree, avals, static, closure)
    if isinstance(program, str):
        stats[f"fallback: {name}: {program}"] += 1
        return plain()
    program.compiled = program.compile(compiler_options)
    return lambda *a: program(_leaves(a, {}))


def cached_jit(fun: Callable) -> Callable:
    """``equinox.filter_jit(fun)`` whose traced programs persist while :func:`enable` has a folder
    (module docstring). Arrays (JAX and NumPy) are traced, everything else is static, as in
    ``filter_jit``; results are the same program's, so equal to ``filter_jit``'s."""
    plain = eqx.filter_jit(fun)
    name = f"{fun.__module__}.{fun.__qualname__}"
    programs: dict = {}

    @functools.wraps(fun)
    def wrapper(*args, **kwargs):
        split = None if _folder is None else _split(args, kwargs)
        if split is None:
            return plain(*args, **kwargs)
        leaves, dyn_tree, avals, static, static_leaves, static_tree = split
        memo_key = (dyn_tree, static_tree, static_leaves, avals)
        try:
            program = programs.get(memo_key)
        except TypeError:  # an unhashable static argument: filter_jit raises its own error for it
            return plain(*args, **kwargs)
        if program is None:
            program = programs[memo_key] = _program(fun, name, static_tree, static_leaves, dyn_tree, avals, static)
        else:
            stats["memory"] += 1
        if isinstance(program, str):
            stats[f"fallback: {name}: {program}"] += 1
            return plain(*args, **kwargs)
        return program(leaves)

    wrapper.plain = plain
    wrapper.lower = plain.lower  # ahead-of-time lowering (memory estimates) as filter_jit's
    return wrapper
