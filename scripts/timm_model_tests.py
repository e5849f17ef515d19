"""Run timm's own model tests (its tests/test_models.py) over pact_zoo's registered models.

timm's test file picks its models with ``timm.list_models`` at import time. This script copies the file into a
temporary folder with a ``conftest.py`` that imports pact_zoo first (so the models register) and narrows
``list_models`` / ``list_pretrained`` to ``pact_*``, ``act_*``, ``pg_*`` and ``acm_*``, and classifies pact_zoo's
models as timm classifies its own: the ViT families join ``NON_STD_FILTERS`` (as timm's ``vit_*`` / ``deit*``:
``[B, N, D]`` features, ``pool_size`` None) and every family module joins ``FEAT_INTER_FILTERS`` (they implement
``forward_intermediates``). Extra arguments go to pytest; TorchScript is deselected by default.

    git -C <timm checkout> show v1.0.31:tests/test_models.py > /tmp/test_models.py   # the installed timm's tag, or the closest
    PYTHONPATH=$PWD HF_HUB_OFFLINE=1 python scripts/timm_model_tests.py /tmp/test_models.py -q

Without network the pretrained-weight tests of the ImageNet tags cannot download; ``--hub-standin`` replaces each
hub download by a randomly initialised state dict of the same timm architecture (same keys and shapes).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PATTERNS = ["pact_*", "act_*", "pg_*", "acm_*"]
VIT_PATTERNS = ["pact_vit_*", "pact_deit_*", "acm_vit_*", "acm_deit_*"]
FAMILY_MODULES = ["pact_resnet_cifar", "pact_resnet", "pact_mobilenet", "pact_vit", "acm_vit"]
#: the line of timm's test file after which the classification is added
ANCHOR = "NUM_NON_STD = len(NON_STD_FILTERS)\n"
#: timm's tests of its own NaFlex / Gemma ViTs (no pact_zoo model) and the TorchScript tests
DEFAULT_DESELECT = "not torchscript and not naflexvit and not gemma4"

CONFTEST = f'''
import fnmatch
import os

import pact_zoo  # registers the models before timm's test file lists them
import timm

_list_models, _list_pretrained = timm.list_models, timm.list_pretrained


def _ours(names):
    return [n for n in names if any(fnmatch.fnmatch(n.split(".")[0], p) for p in {PATTERNS!r})]


timm.list_models = lambda *args, **kwargs: _ours(_list_models(*args, **kwargs))
timm.list_pretrained = lambda *args, **kwargs: _ours(_list_pretrained(*args, **kwargs))

if os.environ.get("PACT_ZOO_HUB_STANDIN") == "1":
    import timm.models._builder as _builder

    def _standin(hub_id, *args, **kwargs):
        return timm.create_model(hub_id.split("/", 1)[1].split(".")[0]).state_dict()

    _builder.load_state_dict_from_hf = _standin
'''


def prepare(test_file: Path, folder: Path) -> Path:
    """Write the classified copy of ``test_file`` and the conftest into ``folder``; the copy's path."""
    source = test_file.read_text()
    if ANCHOR not in source:
        raise SystemExit(f"test_file {test_file}: expected timm's tests/test_models.py (no line {ANCHOR.strip()!r})")
    source = source.replace(ANCHOR, f"FEAT_INTER_FILTERS += {FAMILY_MODULES!r}\n"
                                    f"NON_STD_FILTERS += {VIT_PATTERNS!r}\n" + ANCHOR, 1)
    (folder / "test_models.py").write_text(source)
    (folder / "conftest.py").write_text(CONFTEST)
    return folder / "test_models.py"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("test_file", type=Path, help="timm's tests/test_models.py")
    parser.add_argument("--hub-standin", action="store_true",
                        help="random weights of the same architecture instead of hub downloads")
    parser.add_argument("-k", default=DEFAULT_DESELECT, help=f"pytest -k expression (default: {DEFAULT_DESELECT})")
    args, pytest_args = parser.parse_known_args()
    if not args.test_file.is_file():
        raise SystemExit(f"test_file not found: {args.test_file}")
    folder = Path(tempfile.mkdtemp(prefix="pact_zoo_timm_tests_"))
    try:
        copy = prepare(args.test_file, folder)
        env = dict(os.environ, PACT_ZOO_HUB_STANDIN="1" if args.hub_standin else "0")
        return subprocess.run([sys.executable, "-m", "pytest", str(copy), "-p", "no:cacheprovider", "-k", args.k,
                               *pytest_args], cwd=folder, env=env).returncode
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
