"""What benchmarks/ik.py and benchmarks/scale.py share: the opensim-models gait2392 pipeline
folder (``--data``, default ``$MJX_BIOMECH_SHARED/data/opensim-models``, ``MJX_BIOMECH_SHARED``
defaulting to ``/work/shared``), the check that its files are there, and silencing OpenSim's C++
prints."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

PIPELINE = Path("Pipelines") / "Gait2392_Simbody"
SAGITTAL = ("hip_flexion_r", "hip_flexion_l", "knee_angle_r", "knee_angle_l", "ankle_angle_r", "ankle_angle_l")


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with ``--data``, the opensim-models folder."""
    out = argparse.ArgumentParser(description=description)
    shared = Path(os.environ.get("MJX_BIOMECH_SHARED", "/work/shared")) / "data" / "opensim-models"
    out.add_argument("--data", type=Path, default=shared, help="the opensim-models folder")
    return out


def missing(files, script: str) -> bool:
    """Whether any of ``files`` is missing (then said on stdout, naming ``script``)."""
    absent = [str(f) for f in files if not Path(f).is_file()]
    if absent:
        print(f"{script}: needs the gait2392 pipeline of opensim-models; missing {', '.join(absent)}")
    return bool(absent)


@contextlib.contextmanager
def quiet_fd1():
    """Silence file descriptor 1 while OpenSim's tools print from C++."""
    sys.stdout.flush()
    saved = os.dup(1)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 1)
        try:
            yield
        finally:
            os.dup2(saved, 1)
            os.close(saved)
