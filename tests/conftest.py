"""Test-session set-up: float64 so the oracle comparisons are not limited by float32."""

import os
import warnings


os.environ.setdefault("MPLBACKEND", "Agg")
# No persistent compilation cache in the tests: with jax 0.9.2 on CPU, writing some programs to it
# has aborted the process (the command line leaves it off unless asked).
os.environ.pop("MJX_BIOMECH_CACHE_DIR", None)

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
# myo_sim's loader warns about attaching specs with an empty prefix; it is harmless here.
warnings.filterwarnings("ignore", message="Attaching a spec with an empty prefix")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def myolegs():
    pytest.importorskip("myo_sim", reason="myo-sim is not installed")
    import mjx_biomech

    return mjx_biomech.load_model("myo_sim:myolegs")
