"""The model metadata MJCF has no element for (coordinates, coordinate functions, scale groups,
marker sets): JSON in ``<custom><text name="mjx_biomech">``, so one file is the whole model
(docs/model_format.md)."""

from __future__ import annotations

import json

import mujoco

METADATA_NAME = "mjx_biomech"


def read_metadata(source: mujoco.MjSpec | mujoco.MjModel) -> dict | None:
    """The metadata of an ``MjSpec`` or a compiled ``MjModel``; None where it has none.

    Raises ``json.JSONDecodeError`` when the text is not JSON.
    """
    if isinstance(source, mujoco.MjSpec):
        for text in source.texts:
            if text.name == METADATA_NAME:
                return json.loads(text.data)
        return None
    for i in range(source.ntext):
        if mujoco.mj_id2name(source, mujoco.mjtObj.mjOBJ_TEXT, i) == METADATA_NAME:
            adr, size = source.text_adr[i], source.text_size[i]
            return json.loads(bytes(source.text_data[adr : adr + size - 1]).decode())
    return None
