"""Test set-up: no network, a private HF cache, and pact_zoo imported before any timm lookup."""
import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="pact_zoo_hf_"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One intra-op thread: tests are small, and OpenMP spin-waiting on a shared 2-core machine is very slow.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import pact_zoo  # noqa: E402,F401  (registers the timm models)

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def reset_accelerate():
    """Forget Accelerate's process-wide state after a test that ran the training loop."""
    from accelerate.state import AcceleratorState, GradientState

    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
