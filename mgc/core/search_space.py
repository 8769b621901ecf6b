"""Search-space files: `config.key: {distribution: [args]}` in YAML, checked when read, so a
typo fails in one line before Ray starts. Used by the sweep (to build Tune's space) and by the
figures (to draw a search with its real distributions)."""

from __future__ import annotations

from pathlib import Path

import yaml

from mgc.core.config import ConfigError

DISTRIBUTIONS = ("loguniform", "uniform", "randint", "quniform", "choice")


def read_search_space(path: str | Path) -> dict[str, dict[str, list]]:
    """YAML `config.key: {distribution: args}` → the same mapping, checked."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: search space file not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must map config keys to distributions")
    for key, spec in raw.items():
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
            raise ConfigError(
                f"{path}: {key}: expected one of {{{', '.join(DISTRIBUTIONS)}: [...]}}"
            )
        kind, args = next(iter(spec.items()))
        if not isinstance(args, list) or not args:
            raise ConfigError(f"{path}: {key}: {kind} needs a list of arguments")
        if kind != "choice":
            check_range(path, key, kind, args)
    return raw


def check_range(path: Path, key: str, kind: str, args: list) -> None:
    """[low, high] (quniform adds a step): numbers, low below high, log scales above zero."""
    need = 3 if kind == "quniform" else 2
    if len(args) != need or not all(
        isinstance(a, int | float) and not isinstance(a, bool) for a in args
    ):
        what = "[low, high, step]" if need == 3 else "[low, high]"
        raise ConfigError(f"{path}: {key}: {kind} takes {what} numbers, got {args}")
    low, high = args[0], args[1]
    if not low < high:
        raise ConfigError(f"{path}: {key}: {kind} low {low} is not below high {high}")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"{path}: {key}: loguniform needs low > 0, got {low}")
