"""``pact-zoo`` console entry point: one sub-command per job, each implemented in its own module.

Every command module exposes ``main(argv: list[str] | None) -> int`` with its own :class:`ArgumentParser`, so
``pact-zoo <command> ...`` and ``python scripts/<command>.py ...`` take the same arguments.

One error style (:func:`run_command`): a user error (bad flag, config, file or data; ``ValueError``,
``FileNotFoundError`` and the like) prints one line ``error: ...`` and exits with status 2; ``--debug`` (or
``PACT_ZOO_DEBUG=1``) shows the traceback instead. Any other exception is a bug and keeps its traceback.

Plugins: ``--import MODULE`` (repeatable, any sub-command, before or after it) imports a module of the user's before
the command runs - one that registers a halting method (``pact_zoo.register_halting_method``) or a timm model family
(``@register_model``) - so that recipes and flags can name them. The modules are also listed in ``PACT_ZOO_IMPORT``
(comma-separated), which the benchmark's subprocesses and processes started by ``accelerate launch`` inherit and
import in turn.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Callable, NoReturn, Optional, Sequence

#: exceptions that describe a bad input, not a bug: shown as one line
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, FileExistsError, PermissionError,
               ConnectionError)
USAGE_ERROR_STATUS = 2
DEBUG_FLAG = "--debug"
DEBUG_ENV = "PACT_ZOO_DEBUG"
IMPORT_FLAG = "--import"
IMPORT_ENV = "PACT_ZOO_IMPORT"


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the one-line error style and a ``--debug`` flag (handled by :func:`run_command`)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.add_argument(DEBUG_FLAG, action="store_true", help="show the full traceback of an error")
        self.add_argument(IMPORT_FLAG, metavar="MODULE", action="append", dest="plugin_modules",
                          help="import this module first (repeatable): one that registers your halting method or "
                               "model family")

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see '{self.prog} --help')", file=sys.stderr)
        sys.exit(USAGE_ERROR_STATUS)


def split_import_flags(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """``argv`` without its ``--import MODULE`` / ``--import=MODULE`` flags, and the modules they name."""
    rest, modules, args = [], [], list(argv)
    while args:
        arg = args.pop(0)
        if arg == IMPORT_FLAG:
            if not args or args[0].startswith("-"):
                raise ValueError(f"{IMPORT_FLAG} needs a module name, e.g. {IMPORT_FLAG} my_methods")
            modules.append(args.pop(0))
        elif arg.startswith(IMPORT_FLAG + "="):
            modules.append(arg[len(IMPORT_FLAG) + 1:])
        else:
            rest.append(arg)
    return rest, modules


def import_plugins(modules: Sequence[str] = ()) -> list[str]:
    """Import ``modules`` and those already listed in ``PACT_ZOO_IMPORT`` (the current folder first on the path, as
    ``python -m`` has it), then list them all in ``PACT_ZOO_IMPORT`` for child processes. Returns the modules."""
    names = [m for m in os.environ.get(IMPORT_ENV, "").split(",") if m]
    names += [m for m in modules if m not in names]
    if names and "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for name in names:
        if not name.replace(".", "").replace("_", "").isalnum():
            raise ValueError(f"{IMPORT_FLAG} must name a Python module (my_methods, package.module), got {name!r}")
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not name.startswith(exc.name):
                raise
            raise ValueError(f"{IMPORT_FLAG} {name}: no module named {exc.name!r} on the path (run from the folder "
                             f"that holds it, or set PYTHONPATH)") from None
    if names:
        os.environ[IMPORT_ENV] = ",".join(names)
    return names


def one_line(exc: BaseException) -> str:
    """An exception's message on one line."""
    return " ".join(str(exc).split()) or type(exc).__name__


def run_command(main: Callable[[list[str]], Optional[int]], argv: Optional[Sequence[str]] = None) -> int:
    """Run a command's ``main(argv)`` in the one error style; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    argv = [a for a in argv if a != DEBUG_FLAG]
    try:
        argv, modules = split_import_flags(argv)
        import_plugins(modules)
        return int(main(argv) or 0)
    except SystemExit as exc:  # argparse: --help, or a bad flag (already printed)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else USAGE_ERROR_STATUS)
    except KeyboardInterrupt:
        if debug:
            raise
        print("error: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as exc:
        if debug:
            raise
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return USAGE_ERROR_STATUS

#: command -> (module with ``main(argv)``, one-line help)
COMMANDS = {
    "train": ("pact_zoo.training.train_cli", "fine-tune a model from a YAML recipe (works under accelerate launch)"),
    "convert": ("pact_zoo.training.convert",
                "convert a trained model into an adaptive one: exits, then halting, in phases"),
    "evaluate": ("pact_zoo.training.evaluate", "accuracy and FLOPs at several thresholds, plots"),
    "compare": ("pact_zoo.training.compare",
                "train / convert / load several models, evaluate them on one split: a table, a JSON, a plot"),
    "export": ("pact_zoo.hub", "write a hub-ready folder (safetensors, config.json, model card)"),
    "quickstart": ("pact_zoo.quickstart", "train pact_resnet32 on the bundled digits, evaluate, export"),
    "benchmark": ("pact_zoo.bench.cli", "wall time, FLOPs and memory: adaptive vs full depth vs masked"),
    "data": ("pact_zoo.data.fetch", "fetch the datasets and weights the recipes read (data fetch NAME... --dest data)"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: pact-zoo <command> [options]", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {help_text}" for name, (_, help_text) in COMMANDS.items()]
    lines += ["", "Run 'pact-zoo <command> --help' for the options of a command; add --debug to see the traceback "
              "of an error, --import MODULE to load your own halting method or model family first."]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    leading = []  # pact-zoo --debug --import m <command> ...: the flags go to the command
    while argv and (argv[0] == DEBUG_FLAG or argv[0].startswith(IMPORT_FLAG)):
        take = 2 if argv[0] == IMPORT_FLAG else 1
        leading, argv = leading + argv[:take], argv[take:]
    argv = argv + leading
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}; choose from {', '.join(COMMANDS)}", file=sys.stderr)
        return USAGE_ERROR_STATUS
    module = importlib.import_module(COMMANDS[command][0])
    return run_command(module.main, rest)


if __name__ == "__main__":
    sys.exit(main())
