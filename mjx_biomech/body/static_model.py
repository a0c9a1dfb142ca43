"""The person as a statically scaled MuJoCo model: a copy of the ``MjSpec`` with the values of
:func:`~mjx_biomech.body.scaling.scaled_fields` compiled by MuJoCo (so every derived constant is
MuJoCo's), written as MJCF; or, for a model that keeps no spec, a copy of the compiled
``MjModel`` with those values and ``mj_setConst``.

Written MJCF carries no absolute paths: its mesh, texture, height-field and skin files are
copied into ``<file stem>_assets/`` beside it (:func:`relocate_assets`), so the file and that
folder load from wherever they are moved."""

from __future__ import annotations

import copy
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING

import mujoco
import numpy as np

from mjx_biomech.body.params import BodyParams
from mjx_biomech.body.rotations import quat_mul, quat_to_mat_np
from mjx_biomech.body.scaling import axis_scales, scaled_fields, scaled_length_ranges
from mjx_biomech.errors import InputError
from mjx_biomech.io import atomic_write

if TYPE_CHECKING:
    from mjx_biomech.body.model import BiomechModel


def _orientation(spec: mujoco.MjSpec, element) -> np.ndarray:
    if element.alt.type == mujoco.mjtOrientation.mjORIENTATION_QUAT:
        q = np.asarray(element.quat, float)
        return q / np.linalg.norm(q)
    return np.asarray(spec.resolve_orientation(spec.compiler.degree, spec.compiler.eulerseq, element.alt))


def _frame_pose(spec: mujoco.MjSpec, frame) -> tuple[np.ndarray, np.ndarray]:
    """Position (3,) and quaternion (4,) of a (possibly nested) spec frame in its body."""
    chain = []
    while frame is not None:
        chain.append(frame)
        frame = frame.frame
    pos, quat = np.zeros(3), np.array([1.0, 0.0, 0.0, 0.0])
    for f in reversed(chain):
        pos = pos + quat_to_mat_np(quat) @ np.asarray(f.pos, float)
        quat = quat_mul(quat, _orientation(spec, f), np)
    return pos, quat


def _place(spec: mujoco.MjSpec, element, pos, quat=None) -> None:
    """Set an element's pose from one in its body's frame (the compiled model's convention)."""
    fpos, fquat = _frame_pose(spec, element.frame) if element.frame is not None else (np.zeros(3), None)
    if fquat is None:
        element.pos = pos
    else:
        element.pos = quat_to_mat_np(fquat).T @ (np.asarray(pos) - fpos)
    if quat is not None:
        if fquat is not None:
            quat = quat_mul(fquat * np.array([1.0, -1.0, -1.0, -1.0]), quat, np)
        element.alt.type = mujoco.mjtOrientation.mjORIENTATION_QUAT
        element.quat = quat


def scaled_spec(
    model: BiomechModel, params: BodyParams, total_mass: float | None = None, preserve_mass_distribution: bool = False
) -> mujoco.MjSpec:
    """A copy of the model's ``MjSpec`` with this person's geometry and mass properties.

    Values of :func:`scaled_fields` are written into the elements (in their frames' coordinates);
    mesh geoms instead scale their meshes (a mesh shared by bodies of different scales is copied
    per scale), and tendon and actuator length ranges follow their reference lengths.
    """
    if model.spec is None:
        raise InputError(
            f"{model.source}: this model was loaded from a compiled MjModel, which keeps no MjSpec; "
            "load it from its MJCF path, an MjSpec or 'myo_sim:<name>' to build a statically scaled model"
        )
    model.check_params(params)
    m0 = model.mj_model
    bscale = np.asarray(model.body_scales(params), dtype=float)
    fields = scaled_fields(m0, bscale, np.asarray(params.offsets, dtype=float), np, total_mass, preserve_mass_distribution)
    spec = model.spec.copy()
    spec.compile()  # assigns element ids, matching the compiled model's indices

    for body in spec.bodies[1:]:
        _place(spec, body, fields["body_pos"][body.id])
    for joint in spec.joints:
        _place(spec, joint, fields["jnt_pos"][joint.id])
    for site in spec.sites:
        if not np.isnan(site.fromto[0]):
            raise InputError(f"{model.source}: site {site.name!r} uses fromto; scaling needs pos/quat sites")
        _place(spec, site, fields["site_pos"][site.id])
        site.size = fields["site_size"][site.id]
    for cam in spec.cameras:
        _place(spec, cam, fields["cam_pos"][cam.id])
    for light in spec.lights:
        _place(spec, light, fields["light_pos"][light.id])

    mesh_scales: dict[str, dict[tuple, list]] = {}
    for geom in spec.geoms:
        s = bscale[m0.geom_bodyid[geom.id]]
        if geom.type == mujoco.mjtGeom.mjGEOM_MESH:
            # The compiled pose of a mesh geom includes the mesh's own frame: scale the spec's.
            geom.pos = np.asarray(geom.pos) * s
            mesh_scales.setdefault(geom.meshname, {}).setdefault(tuple(s), []).append(geom)
        else:
            geom.fromto = np.full(6, np.nan)
            _place(spec, geom, fields["geom_pos"][geom.id], fields["geom_quat"][geom.id])
            geom.size = fields["geom_size"][geom.id]
        if geom.mass > 0:
            geom.mass = geom.mass * float(np.prod(s))
    _scale_meshes(spec, mesh_scales)

    for body in spec.bodies[1:]:
        b = body.id
        if m0.body_mass[b] > 0:
            body.explicitinertial = True
            body.mass = fields["body_mass"][b]
            body.inertia = fields["body_inertia"][b]
            body.iquat = fields["body_iquat"][b]
            body.ipos = fields["body_ipos"][b]
            body.fullinertia = [np.nan, 0.0, 0.0, 0.0, 0.0, 0.0]
    spec.compiler.inertiafromgeom = mujoco.mjtInertiaFromGeom.mjINERTIAFROMGEOM_AUTO

    for eq in spec.equalities:
        eq.data = fields["eq_data"][eq.id]

    scaled = spec.compile()
    ranges = scaled_length_ranges(m0, scaled.tendon_length0, scaled.actuator_length0)
    for tendon in spec.tendons:
        if tendon.range[1] > tendon.range[0]:
            tendon.range = ranges["tendon_range"][tendon.id]
        if np.all(np.asarray(tendon.springlength) >= 0):
            tendon.springlength = ranges["tendon_lengthspring"][tendon.id]
    for act in spec.actuators:
        if np.any(np.asarray(act.lengthrange) != 0):
            act.lengthrange = ranges["actuator_lengthrange"][act.id]
    return spec


def _scale_meshes(spec: mujoco.MjSpec, mesh_scales: dict[str, dict[tuple, list]]) -> None:
    by_name = {mesh.name: mesh for mesh in spec.meshes}
    for name, scales in mesh_scales.items():
        mesh = by_name[name]
        if len(scales) == 1:
            (s,) = scales
            mesh.scale = np.asarray(mesh.scale) * np.array(s)
            continue
        # A mesh shared by bodies of different scales gets one copy per scale.
        for k, (s, geoms) in enumerate(scales.items()):
            copy_ = spec.add_mesh()
            copy_.name = f"{name}__scaled{k}"
            copy_.file = mesh.file
            copy_.content_type = mesh.content_type
            copy_.refpos = mesh.refpos
            copy_.refquat = mesh.refquat
            copy_.inertia = mesh.inertia
            copy_.smoothnormal = mesh.smoothnormal
            copy_.maxhullvert = mesh.maxhullvert
            copy_.uservert = mesh.uservert
            copy_.userface = mesh.userface
            copy_.usernormal = mesh.usernormal
            copy_.scale = np.asarray(mesh.scale) * np.array(s)
            for geom in geoms:
                geom.meshname = copy_.name


def write_scaled_mjcf(
    model: BiomechModel, params: BodyParams, path, total_mass: float | None = None, preserve_mass_distribution: bool = False
) -> Path:
    """Write the statically scaled model's MJCF atomically, its asset files copied beside it."""
    spec = scaled_spec(model, params, total_mass, preserve_mass_distribution)
    spec.compile()
    for body in spec.bodies[1:]:
        # The XML writer keeps 6 significant digits; rounding must not push a rod-like body's
        # principal moments across the triangle inequality, which MuJoCo refuses to load.
        moments = np.sort(np.asarray(body.inertia, dtype=float))
        if body.explicitinertial and moments[2] > (moments[0] + moments[1]) * (1 - 2e-5):
            limit = (moments[0] + moments[1]) * (1 - 2e-5)
            body.inertia = np.minimum(np.asarray(body.inertia, dtype=float), limit)
    xml = _name_anonymous_defaults(spec.to_xml())
    root = ET.fromstring(xml)
    base = spec.modelfiledir or (Path(model.source).parent if model.source and os.path.exists(model.source) else ".")
    if relocate_assets(root, base, path):
        # MuJoCo writes <custom><text> content as CDATA, which ElementTree does not keep; its
        # data attribute says the same.
        for text in root.iter("text"):
            if text.text and text.text.strip() and "data" not in text.attrib:
                text.set("data", text.text)
                text.text = None
        xml = ET.tostring(root, encoding="unicode")
    with atomic_write(path) as f:
        f.write(xml)
    return Path(path)


_ASSET_FOLDERS = {"mesh": "meshdir", "hfield": "meshdir", "skin": "meshdir", "texture": "texturedir"}


def relocate_assets(root: ET.Element, base: str | os.PathLike, out_path: str | os.PathLike) -> bool:
    """Copy the asset files of MJCF ``root`` into ``<stem of out_path>_assets/`` beside ``out_path``
    and point ``root`` at the copies (relative ``meshdir`` and ``texturedir``); False if it has none.

    Files are found as MuJoCo finds them: relative to the compiler's ``meshdir`` (meshes,
    height fields, skins) or ``texturedir`` (textures), themselves relative to ``base`` (the
    folder the MJCF was read from). Two different files of one name are told apart by a
    numbered suffix; each copy is written atomically.
    """
    out_path = Path(out_path)
    compiler = root.find("compiler")
    settings = dict(compiler.attrib) if compiler is not None else {}
    folders = {key: Path(base, settings.get(key, settings.get("assetdir", ""))) for key in ("meshdir", "texturedir")}
    folder = f"{out_path.stem}_assets"
    copies: dict[Path, str] = {}
    for tag, key in _ASSET_FOLDERS.items():
        for el in root.iter(tag):
            for attr, file in list(el.attrib.items()):
                if not (attr == "file" or (tag == "texture" and attr.startswith("file"))) or not file:
                    continue
                source = (folders[key] / file).resolve()
                if source not in copies:
                    copies[source] = _copy_asset(source, out_path.parent / folder, set(copies.values()))
                el.set(attr, copies[source])
    if not copies:
        return False
    if compiler is None:
        compiler = ET.Element("compiler")
        root.insert(0, compiler)
    compiler.attrib.pop("assetdir", None)
    compiler.set("meshdir", folder)
    compiler.set("texturedir", folder)
    return True


def _copy_asset(source: Path, folder: Path, taken: set[str]) -> str:
    name, k = source.name, 1
    while name in taken:
        name, k = f"{source.stem}_{k}{source.suffix}", k + 1
    try:
        data = source.read_bytes()
    except OSError as e:
        raise InputError(f"{source}: cannot read this asset of the model ({e.strerror or e})") from None
    with atomic_write(folder / name, "wb") as f:
        f.write(data)
    return name


def _name_anonymous_defaults(xml: str) -> str:
    """Give nested unnamed ``<default>`` classes a name.

    Specs attached with an empty prefix (MyoSuite's myo_sim models) keep an unnamed default
    class, which MuJoCo writes but will not read back; a unique name changes nothing else,
    since no element can refer to a class without a name.
    """
    out, depth, count, last = [], 0, 0, 0
    for tag in re.finditer(r"<(/?)default\b([^>]*?)(/?)>", xml):
        closing, attrs, self_closing = tag.group(1), tag.group(2), tag.group(3)
        if closing:
            depth -= 1
            continue
        if depth > 0 and "class=" not in attrs:
            out.append(xml[last : tag.start()])
            out.append(f'<default class="mjx_biomech_unnamed{count}"{attrs}{self_closing}>')
            last = tag.end()
            count += 1
        if not self_closing:
            depth += 1
    out.append(xml[last:])
    return "".join(out)


def scaled_compiled_model(
    model: BiomechModel, params: BodyParams, total_mass: float | None = None, preserve_mass_distribution: bool = False
) -> mujoco.MjModel:
    """The same person as :func:`scaled_spec`, by editing a copy of a compiled ``MjModel``.

    For models given as an ``MjModel`` (which keeps no ``MjSpec``, e.g. ``myo_sim.load(name)[0]``).
    The fields of :func:`scaled_fields` are written; ``mj_setConst`` recomputes the constants
    MuJoCo derives from them. Mesh vertices are rescaled where all geoms using a mesh share
    one scale.
    """
    model.check_params(params)
    m0 = model.mj_model
    m = copy.deepcopy(m0)
    s = np.asarray(model.body_scales(params), dtype=float)
    fields = scaled_fields(m0, s, np.asarray(params.offsets, dtype=float), np, total_mass, preserve_mass_distribution)
    for name, value in fields.items():
        getattr(m, name)[:] = value
    mesh_axes = axis_scales(m0.geom_quat, s[m0.geom_bodyid], np)
    mesh_scales: dict[int, set] = {}
    for g in np.flatnonzero((m0.geom_type == int(mujoco.mjtGeom.mjGEOM_MESH)) & (m0.geom_dataid >= 0)):
        mesh_scales.setdefault(int(m0.geom_dataid[g]), set()).add(tuple(mesh_axes[g]))
    for mesh, scales in mesh_scales.items():
        if len(scales) == 1:
            adr, num = m0.mesh_vertadr[mesh], m0.mesh_vertnum[mesh]
            m.mesh_vert[adr : adr + num] = m0.mesh_vert[adr : adr + num] * np.array(next(iter(scales)), dtype=np.float32)
    d = mujoco.MjData(m)
    mujoco.mj_setConst(m, d)
    # mj_setConst leaves the statistics the compiler sets; the C solver's tolerances read meaninertia.
    d.qpos[:] = m.qpos0
    mujoco.mj_forward(m, d)
    full_m = np.zeros((m.nv, m.nv))
    mujoco.mj_fullM(m, d, full_m)
    m.stat.meaninertia = float(np.mean(np.diag(full_m))) if m.nv else m.stat.meaninertia
    m.stat.meanmass = float(np.mean(m.body_mass[1:])) if m.nbody > 1 else m.stat.meanmass
    for name, value in scaled_length_ranges(m0, m.tendon_length0, m.actuator_length0).items():
        getattr(m, name)[:] = value
    return m


