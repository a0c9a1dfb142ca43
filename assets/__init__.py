"""The bundled full-body model: ``MODEL_PATH`` is the committed MJCF, ``build_mjcf()`` what its tables give."""

from pathlib import Path

MODEL_PATH = Path(__file__).resolve().parent / "fullbody.xml"


def build_mjcf() -> str:
    """The MJCF text ``python -m assets.build_model`` writes to ``MODEL_PATH``."""
    # Imported here so that reading MODEL_PATH costs no table parsing.
    from assets.build_model import build_mjcf as build

    return build()
