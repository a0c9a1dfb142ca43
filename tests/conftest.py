"""Test-session set-up: float64 so the oracle comparisons are not limited by float32."""

import os
import warnings

import tempfile

os.environ.setdefault("MPLBACKEND", "Agg")
# The command line keeps compiled programs in a persistent cache; the tests' is their own, one
# folder for the whole session, set before anything compiles (switching JAX's cache folder in the
# middle of a process is not supported: a later write can abort the process).
os.environ.setdefault("MJX_BIOMECH_CACHE_DIR", tempfile.mkdtemp(prefix="mjx_biomech_test_cache_"))

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_compilation_cache_dir", os.environ["MJX_BIOMECH_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
# myo_sim's loader warns about attaching specs with an empty prefix; it is harmless here.
warnings.filterwarnings("ignore", message="Attaching a spec with an empty prefix")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def myolegs():
    pytest.importorskip("myo_sim", reason="myo-sim is not installed")
    import mjx_biomech

    return mjx_biomech.load_model("myo_sim:myolegs")
