"""Loading configuration: the schema's defaults, YAML files with `base:` inheritance and
`section.key=value` overrides, merged, type-checked and interpolated by OmegaConf."""

from __future__ import annotations

import dataclasses
import difflib
import logging
import operator
import os
import re
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf, errors, nodes

# The schema's classes are part of this module's interface: callers import them from here.
from mgc.core.errors import UserError
from mgc.core.schema import (  # noqa: F401
    AUGMENT_CODECS,
    AUGMENT_CONDITIONS,
    AUGMENT_NOISE_COLORS,
    AugmentConfig,
    CacheConfig,
    ChunkConfig,
    Config,
    DataConfig,
    ExperimentConfig,
    FeatureConfig,
    FinalBudgetConfig,
    ModelConfig,
    ResourcesConfig,
    RunConfig,
    SpecAugmentConfig,
    SweepConfig,
    TrainConfig,
    WandbConfig,
)

log = logging.getLogger(__name__)


class ConfigError(UserError, ValueError):
    """A config file, override or value that cannot be used; the message is one line."""


# Keys old run folders still hold; dropped with a warning so their config.yaml keeps loading.
RETIRED = {"train.num_workers"}
_EXPECTED = {nodes.BooleanNode: "true/false", nodes.IntegerNode: "an integer"}
_EXPECTED |= {nodes.FloatNode: "a number", nodes.StringNode: "a string"}
_EXPECTED |= {ListConfig: "a list", DictConfig: "a mapping"}
_POSITIVE = ["features.sample_rate", "features.n_fft", "features.hop_length", "features.n_mels"]
_POSITIVE += ["train.lr", "train.batch_size", "train.epochs", "cache.batch_size"]
_NOT_NEGATIVE = ["train.windows_per_track", "train.warmup_epochs", "train.early_stopping_patience"]
_NOT_NEGATIVE += ["sweep.final.windows_per_track", "sweep.final.early_stopping_patience"]


def _shell_to_oc(value: Any) -> Any:
    """Shell-style ${VAR} / ${VAR:-default}, which configs used before OmegaConf, as oc.env."""
    # The default is quoted: OmegaConf's grammar rejects `~` and `:` (s3://) in bare arguments.
    if isinstance(value, list):
        return [_shell_to_oc(v) for v in value]
    if not isinstance(value, str):
        return value
    value = re.sub(r"\$\{([A-Za-z_]\w*):-([^}]*)\}", r"${oc.env:\1,'\2'}", value)
    return re.sub(r"\$\{([A-Za-z_]\w*)\}", r"${oc.env:\1}", value)


def _tidy(layer: dict, cls: type = Config, prefix: str = "") -> dict:
    """A copy of one plain layer, fixed where OmegaConf would accept or convert the wrong thing."""
    hints, out = typing.get_type_hints(cls), {}
    for key, value in layer.items():
        full, tp = f"{prefix}{key}", hints.get(key)
        if full in RETIRED:
            log.warning("ignoring retired config key %s", full)
        elif dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):  # OmegaConf's error for this names no key
                raise ConfigError(f"{full}: expected a mapping, got {value!r}")
            out[key] = _tidy(value, tp, f"{full}.")
        elif tp is bool and not isinstance(value, bool):  # OmegaConf would read 3 as true
            raise ConfigError(f"{full}: expected true/false, got {value!r}")
        elif isinstance(value, bool) and (
            tp in (str, str | None) or typing.get_origin(tp) is Literal
        ):
            out[key] = "on" if value else "off"  # YAML 1.1 read the word on/off as a bool
        else:
            out[key] = _shell_to_oc(value)
    return out


def _describe(exc: errors.OmegaConfBaseException) -> str:
    """OmegaConf's message spans lines and names Python types; say it in one line."""
    key, leaf, node = exc.full_key or "config", str(exc.key), exc.child_node
    if isinstance(exc, errors.ConfigKeyError) and dataclasses.is_dataclass(exc.object_type):
        valid = [f.name for f in dataclasses.fields(exc.object_type)]
        near = difflib.get_close_matches(leaf, valid, n=1)
        hint = (
            f"did you mean {key[: -len(leaf)]}{near[0]}?" if near else "valid: " + ", ".join(valid)
        )
        return f"unknown config key {key} ({hint})"
    if isinstance(node, nodes.LiteralNode):
        *some, last = typing.get_args(node.ref_type)
        return f"{key} must be {', '.join(some)} or {last}, got {exc.value!r}"
    if isinstance(exc, errors.ValidationError) and type(node) in _EXPECTED:
        return f"{key}: expected {_EXPECTED[type(node)]}, got {exc.value!r}"
    return f"{key}: {(str(exc).splitlines() or [type(exc).__name__])[0]}"


def _file_layers(path: Path, seen: tuple[Path, ...] = ()) -> list[dict]:
    """The file's values, preceded by those of its `base:` chain (paths relative to it)."""
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    if path.resolve() in seen:
        raise ConfigError(f"{path}: `base:` leads back to this file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    base = data.pop("base", None)
    below = _file_layers(path.parent / base, (*seen, path.resolve())) if base else []
    return [*below, data]


def _layer(key: str, value: Any) -> dict:
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def parse_override(text: str) -> tuple[str, Any]:
    """`train.lr=3e-4` -> ("train.lr", value read as YAML); the schema types it when merged."""
    key, eq, raw = text.partition("=")
    if not eq or not all(key.strip().split(".")):
        raise ConfigError(f"override {text!r} is not of the form section.key=value")
    try:
        return key.strip(), yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        return key.strip(), raw  # e.g. a description with an unbalanced bracket


def _build(base: Config | type[Config], layers: list[dict]) -> Config:
    # One layer per override, so OmegaConf's merge order lets the last one win.
    try:
        merged = OmegaConf.merge(OmegaConf.structured(base), *(_tidy(x) for x in layers))
        cfg = OmegaConf.to_object(merged)  # resolves env values: a saved config shows what ran
    except errors.OmegaConfBaseException as exc:
        raise ConfigError(_describe(exc)) from exc
    d, s, home = cfg.data, cfg.sweep, os.path.expanduser
    d.root, d.extra_train_roots = home(d.root), [home(p) for p in d.extra_train_roots]
    cfg.cache.dir, cfg.run.out_dir = home(cfg.cache.dir), home(cfg.run.out_dir)
    s.storage_path, s.results_dir = home(s.storage_path), home(s.results_dir)
    validate(cfg)
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML file after its `base:` chain, then the overrides, validated."""
    layers = _file_layers(Path(path)) if path else []
    return _build(Config, layers + [_layer(*parse_override(o)) for o in overrides or []])


def with_params(cfg: Config, params: dict[str, Any]) -> Config:
    """A new config with dotted keys set (sweep samples; numpy scalars become Python ones)."""
    layers = [_layer(key, v.item() if hasattr(v, "item") else v) for key, v in params.items()]
    return _build(cfg, layers)  # `cfg` itself is only read: to_object builds new dataclasses


def validate(cfg: Config) -> None:
    """Range checks the types cannot express (allowed words are Literal types)."""
    c, d = cfg.chunks, cfg.data
    if c.window_s <= 0:  # 0 used to mean "whole clip", which made the window depend on the data
        raise ConfigError(
            "chunks.window_s must be > 0 seconds (30 for a whole GTZAN clip; shorter tracks are padded)"
        )
    checks = [(operator.attrgetter(k)(cfg) > 0, f"{k} must be positive") for k in _POSITIVE]
    checks += [
        ((v := operator.attrgetter(k)(cfg)) is None or v >= 0, f"{k} must be >= 0")
        for k in _NOT_NEGATIVE
    ]
    checks += [
        (0 <= c.overlap < 1, "chunks.overlap must be in [0, 1)"),
        (0 < d.train_fraction <= 1, "data.train_fraction must be in (0, 1]"),
        (0 < d.fraction <= 1, "data.fraction must be in (0, 1]"),
        (0 <= cfg.train.label_smoothing < 1, "train.label_smoothing must be in [0, 1)"),
        (cfg.train.consistency >= 0, "train.consistency must be >= 0"),
        (
            cfg.train.consistency == 0 or cfg.augment.copies > 0,
            "train.consistency needs augmented copies to pair with (augment.copies > 0)",
        ),
        (len(cfg.sweep.final_seeds) >= 1, "sweep.final_seeds needs at least one seed"),
        (
            cfg.sweep.final.epochs is None or cfg.sweep.final.epochs > 0,
            "sweep.final.epochs must be positive",
        ),
    ]
    for ok, message in checks + _augment_checks(cfg.augment):
        if not ok:
            raise ConfigError(message)


def _augment_checks(a: AugmentConfig) -> list[tuple[bool, str]]:
    """The augment section's ranges and names: (ok, message) pairs as `validate` takes them."""

    def known(key: str, values: list, allowed: tuple) -> tuple[bool, str]:
        bad = [v for v in values if v not in allowed]
        return not bad and bool(values), (
            f"augment.{key}: {bad or 'empty'} (choose from {', '.join(allowed)})"
        )

    def span(key: str) -> tuple[bool, str]:
        lo_hi = getattr(a, key)
        return len(lo_hi) == 2 and lo_hi[0] <= lo_hi[1], f"augment.{key} must be [low, high]"

    return [
        (a.copies >= 0, "augment.copies must be >= 0"),
        known("conditions", a.conditions, AUGMENT_CONDITIONS),
        (
            1 <= a.per_copy <= len(set(a.conditions)),
            "augment.per_copy must be between 1 and the number of augment.conditions",
        ),
        known("codecs", a.codecs, AUGMENT_CODECS),
        known("noise_colors", a.noise_colors, AUGMENT_NOISE_COLORS),
        (
            bool(a.bandlimit_rates) and all(r > 0 for r in a.bandlimit_rates),
            "augment.bandlimit_rates must be positive rates in Hz",
        ),
        (
            bool(a.codec_kbps) and all(k > 0 for k in a.codec_kbps),
            "augment.codec_kbps must be positive bitrates",
        ),
        span("noise_snr_db"),
        span("gain_db"),
    ]


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | Path) -> Path:
    """Write the resolved config, so a run folder records the paths and values it used."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return path
