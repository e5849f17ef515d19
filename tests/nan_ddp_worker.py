"""Worker of tests/test_first_hour.py::test_a_loss_that_diverges_on_one_process_stops_every_process (run under
``accelerate launch``, two CPU processes): the loss of process 1 alone becomes NaN; every process must stop with the
same one-line error. Writes ``<out>/rank<r>.txt`` with the error it raised."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from pact_zoo.training import ConfigError, load_config, loop, train


def main(out: Path, config: dict) -> None:
    rank = int(os.environ["RANK"])
    if rank == 1:
        real = loop._sample_loss
        loop._sample_loss = lambda *args: real(*args) * float("nan")
    try:
        train(load_config(None, config))
    except ConfigError as exc:
        (out / f"rank{rank}.txt").write_text(str(exc))


if __name__ == "__main__":
    main(Path(sys.argv[1]), json.loads(sys.argv[2]))
