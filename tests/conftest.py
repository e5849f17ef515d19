"""Test set-up: no network, a private HF cache (removed at the end of the session), and pact_zoo imported before
any timm lookup."""
import json
import os
import shutil
import subprocess
import sys
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


REPO = Path(__file__).resolve().parent.parent
#: ``accelerate launch`` of two CPU processes on one machine (the port follows)
TWO_PROCESS_LAUNCH = (sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                      "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                      "--main_process_port")
#: a tiny pact_resnet32 on digits: 16 rows per process and step
_TINY_RUN = dict(model="pact_resnet32", model_kwargs={"layers": [2, 2, 2], "channels": [4, 8, 8], "tau": 0.05},
                 dataset="digits", max_eval_samples=24, epochs=1, batch_size=16, eval_batch_size=24, lr=0.05,
                 augment="crop", eval_thresholds=[0.3, 0.7])
#: the scenarios of tests/two_process_worker.py, in order, with their training configs
TWO_PROCESS_PLAN = {
    "acm": None,
    "nan": dict(_TINY_RUN, max_train_samples=32),
    # sampled-path training: with halting bias +4 most rows stop after the first unit, so in most steps no row of a
    # process reaches the later units; DDP must still get a gradient for every parameter (checked from step 2 on).
    # 97 samples: 3 steps of 2 x 16 rows. Last: a finished run ends with accelerate's end_training, which destroys
    # the process group (a scenario after it would rendezvous again on the same port, and may hang)
    "train": dict(_TINY_RUN, max_train_samples=97, model_kwargs=dict(_TINY_RUN["model_kwargs"],
                                                                     method="policy_gradient", halting_bias_init=4.0)),
}


def _launch_env(folder: Path) -> dict:
    temp = folder / "launch_tmp"
    temp.mkdir(exist_ok=True)
    return {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "TMPDIR": str(temp)}


@pytest.fixture
def launch_env(tmp_path):
    """Environment for a multi-process ``accelerate launch``: CPU processes, one thread, and ``TMPDIR`` inside the
    test's own folder, so that torchelastic's ``torchelastic_*`` log folders go away with it."""
    return _launch_env(Path(tmp_path))


@pytest.fixture(scope="session")
def two_process_runs(tmp_path_factory):
    """One ``accelerate launch`` of two CPU processes that runs every scenario of :data:`TWO_PROCESS_PLAN`
    (tests/two_process_worker.py), shared by the tests that check them: ``(output folder, the finished launch)``;
    ``<folder>/<scenario>`` holds each scenario's files."""
    out = tmp_path_factory.mktemp("two_process")
    env = _launch_env(out)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    command = [*TWO_PROCESS_LAUNCH, "29534", str(REPO / "tests" / "two_process_worker.py"), str(out),
               json.dumps(TWO_PROCESS_PLAN)]
    return out, subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


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
