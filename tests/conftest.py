"""Test set-up: no network, a private HF cache (removed at the end of the session), and pact_zoo imported before
any timm lookup."""
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
#: the private HF cache this session created (None when HF_HOME was given)
_OWN_HF_HOME = None
if "HF_HOME" not in os.environ:
    _OWN_HF_HOME = os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="pact_zoo_hf_")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One intra-op thread: tests are small, and OpenMP spin-waiting on a shared 2-core machine is very slow.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import pact_zoo  # noqa: E402,F401  (registers the timm models)

torch.set_num_threads(1)


def pytest_sessionfinish(session, exitstatus):
    if _OWN_HF_HOME is not None:
        shutil.rmtree(_OWN_HF_HOME, ignore_errors=True)


@pytest.fixture
def launch_env(tmp_path):
    """Environment for a multi-process ``accelerate launch``: CPU processes, one thread, and ``TMPDIR`` inside the
    test's own folder, so that torchelastic's ``torchelastic_*`` log folders go away with it."""
    temp = Path(tmp_path) / "launch_tmp"
    temp.mkdir(exist_ok=True)
    return {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "TMPDIR": str(temp)}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def reset_accelerate():
    """Forget Accelerate's process-wide state after a test that ran the training loop; the fixture's value does
    it on call, between two runs of one test."""
    from accelerate.state import AcceleratorState, GradientState

    def reset() -> None:
        AcceleratorState._reset_state(True)
        GradientState._reset_state()

    yield reset
    reset()
