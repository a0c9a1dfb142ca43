"""Test-session set-up: float64 so the oracle comparisons are not limited by float32."""

import os
import warnings


os.environ.setdefault("MPLBACKEND", "Agg")
# The command line keeps compiled programs in a persistent cache by default; the tests' in-process
# main() calls must neither write the user's cache nor switch this process's cache on (the first
# compilation fixes its folder for the whole session). Subprocesses inherit this too; a test that
# wants the cache passes --cache-dir or drops the variable (tests/test_cli.py).
os.environ["MJX_BIOMECH_COMPILE_CACHE"] = "0"
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
