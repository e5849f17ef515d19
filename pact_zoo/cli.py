"""``pact-zoo`` console entry point: one sub-command per job, each implemented in its own module.

Every command module exposes ``main(argv: list[str] | None) -> int`` with its own argparse parser, so
``pact-zoo <command> ...`` and ``python scripts/<command>.py ...`` take the same arguments.
"""
from __future__ import annotations

import importlib
import sys
from typing import Optional, Sequence

#: command -> (module with ``main(argv)``, one-line help)
COMMANDS = {
    "train": ("pact_zoo.training.train_cli", "fine-tune a model from a YAML recipe (works under accelerate launch)"),
    "evaluate": ("pact_zoo.training.evaluate", "accuracy and FLOPs at several thresholds, plots"),
    "export": ("pact_zoo.hub", "write a hub-ready folder (safetensors, config.json, model card)"),
    "quickstart": ("pact_zoo.quickstart", "train pact_resnet32 on the bundled digits, evaluate, export"),
    "benchmark": ("pact_zoo.benchmark", "wall time, FLOPs and memory: adaptive vs full depth vs masked"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: pact-zoo <command> [options]", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {help_text}" for name, (_, help_text) in COMMANDS.items()]
    lines += ["", "Run 'pact-zoo <command> --help' for the options of a command."]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"pact-zoo: unknown command {command!r}; choose from {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
