"""Source of the bundled full-body model: readable tables, marker sets and the builder.

``python -m assets.build_model`` writes ``MODEL_PATH`` (``mjx_biomech/data/fullbody.xml``, the
package data ``mjx_biomech.load_model()`` reads); ``build_mjcf()`` is what the tables give.
"""

from pathlib import Path

MODEL_PATH = Path(__file__).resolve().parent.parent / "mjx_biomech" / "data" / "fullbody.xml"


def build_mjcf() -> str:
    """The MJCF text ``python -m assets.build_model`` writes to ``MODEL_PATH``."""
    # Imported here so that reading MODEL_PATH costs no table parsing.
    from assets.build_model import build_mjcf as build

    return build()
