"""``init_from:`` of a ``pact-zoo compare`` entry: a warm start. The entry's training starts from the model of an
earlier entry (trained, converted or given) through ``pretrained_file``: its weights are loaded and the halting
heads keep their fresh init (the PACT-LSTM: :func:`~pact_zoo.training.tasks.load_weights_fresh_heads`; timm models:
their checkpoint filter), so a plain network's weights can start an adaptive one.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

from .config import ConfigError, load_config

if TYPE_CHECKING:
    from .compare import ComparisonEntry

__all__ = ["INIT_KEY", "resolve_init_from", "with_init_sources"]

#: the entry key naming the earlier entry whose model starts this one
INIT_KEY = "init_from"


def resolve_init_from(path: str, raw_entries: Sequence[Dict[str, Any]], entries: List[ComparisonEntry]) -> None:
    """For every item of the recipe's ``entries`` with ``init_from``, set ``pretrained_file`` (and ``init_from``) of
    the entries it expanded to: the model folder of the one entry named, which must come earlier in the recipe
    (an entry's name, or the recipe name of a grid that expanded to one entry; of a seed grid, each entry starts from
    the source with its own seed). Only ``train`` entries take it, and
    not together with a ``pretrained_file`` of their own; every problem raises a one-line :class:`ConfigError`."""
    for raw in raw_entries:
        if INIT_KEY not in raw:
            continue
        source, where = raw[INIT_KEY], f"{path}: entry {raw['name']!r}"
        own = [entry for entry in entries if entry.recipe_name == raw["name"]]
        earlier = entries[:entries.index(own[0])]
        matches = [entry for entry in earlier if source in (entry.name, entry.recipe_name)]
        sources = _sources(own, matches)
        if not isinstance(source, str) or sources is None:
            raise ConfigError(f"{where}: {INIT_KEY} must name one earlier entry, or a seed grid with this entry's "
                              f"seeds, whose model starts this one's training "
                              f"({', '.join(e.name for e in earlier) or 'none comes before it'}), got {source!r}")
        if own[0].kind != "train":
            raise ConfigError(f"{where}: {INIT_KEY} needs a train entry (a conversion names its source in its "
                              f"recipe), this one is {own[0].kind}")
        for entry, start in zip(own, sources):
            if load_config(entry.path, entry.overrides).pretrained_file:
                raise ConfigError(f"{where}: {INIT_KEY} and pretrained_file both choose the starting weights; "
                                  f"keep one")
            entry.overrides = {**entry.overrides, "pretrained_file": str(start.model_dir())}
            entry.init_from = start.name


def _sources(own: List[ComparisonEntry], matches: List[ComparisonEntry]) -> Optional[List[ComparisonEntry]]:
    """The entry that starts each of ``own``: the one match, or, when ``init_from`` names a grid over seeds, the
    match with the entry's own seed (``pact_warm-seed1`` starts from ``lstm-seed1``); None when neither fits."""
    if len(matches) == 1:
        return [matches[0]] * len(own)
    by_seed: Dict[Any, List[ComparisonEntry]] = {}
    for match in matches:
        by_seed.setdefault(match.seed, []).append(match)
    if not matches or any(len(by_seed.get(entry.seed, [])) != 1 for entry in own):
        return None
    return [by_seed[entry.seed][0] for entry in own]


def with_init_sources(entries: List[ComparisonEntry], kept: List[ComparisonEntry]) -> List[ComparisonEntry]:
    """``kept`` and every entry their ``init_from`` needs (transitively), in recipe order."""
    by_name = {entry.name: entry for entry in entries}
    needed = {entry.name for entry in kept}
    pending = [entry.init_from for entry in kept if entry.init_from]
    while pending:
        name = pending.pop()
        if name not in needed:
            needed.add(name)
            pending += [by_name[name].init_from] if by_name[name].init_from else []
    return [entry for entry in entries if entry.name in needed]
