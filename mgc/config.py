"""Typed configuration: dataclasses loaded from YAML, `section.key=value` overrides, validation."""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message is one line naming the key."""


@dataclass
class DataConfig:
    # Folder-per-genre dataset root. "${MGC_DATA_ROOT}" style references are expanded, so the
    # same YAML works on a laptop, in CI and on a cluster with shared storage.
    root: str = "${MGC_DATA_ROOT:-data/gtzan}"
    # "stratified" (70/15/15 by track, seeded), "fault_filtered" (shipped named split),
    # or a path to a split JSON written by `python -m mgc.data split`.
    split: str = "stratified"
    split_seed: int = 42
    # Fraction of the training tracks used (E5 data scale); stratified by genre, seeded.
    train_fraction: float = 1.0
    # Fraction of the tracks of every part (smoke runs); stratified by genre, seeded.
    fraction: float = 1.0
    # Extra folder-per-genre datasets whose tracks are added to the training part only (E5).
    extra_train_roots: list[str] = field(default_factory=list)


@dataclass
class FeatureConfig:
    sample_rate: int = 22050
    n_fft: int = 2048
    hop_length: int = 512
    n_mels: int = 128
    f_min: float = 0.0
    f_max: float | None = None
    # dB floor relative to each track's peak, as librosa.power_to_db(top_db=80); null disables it.
    top_db: float | None = 80.0


@dataclass
class ChunkConfig:
    # Window length in seconds; 0 means the whole clip as one window.
    window_s: float = 3.0
    # Fraction of a window shared with the next one: 0 for 3 s segments, 0.5 for 10 s windows.
    overlap: float = 0.0
    # Standardise each chunk to zero mean, unit variance (per chunk, over all bins).
    normalize: bool = True


@dataclass
class CacheConfig:
    # Local folder or an fsspec URI (s3://bucket/mgc-cache, gs://…) that remote workers can reach.
    dir: str = "${MGC_CACHE_DIR:-.mgc_cache}"
    # Ray address for preprocessing; null starts (or joins) a local Ray.
    ray_address: str | None = None
    # CPUs given to the local Ray when one is started here; null uses all of them.
    num_cpus: int | None = None
    # Most files per Ray Data task. Fewer when that would leave the cluster's CPUs short of
    # work: each CPU gets at least 4 tasks (a task costs tens of ms of Ray overhead).
    batch_size: int = 32


@dataclass
class ModelConfig:
    name: str = "cnn4"
    dropout: float = 0.3
    # Base channel width for the CNNs that take one.
    width: int = 32
    # torchvision models (resnet18, efficientnet_b0): path to ImageNet weights, or "download".
    pretrained: str | None = None


@dataclass
class SpecAugmentConfig:
    enabled: bool = False
    freq_mask: int = 16
    time_mask: int = 24
    n_freq_masks: int = 2
    n_time_masks: int = 2


@dataclass
class TrainConfig:
    optimizer: str = "adam"  # adam | adamw
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 32
    epochs: int = 30
    scheduler: str = "none"  # none | cosine
    warmup_epochs: int = 0
    label_smoothing: float = 0.0
    # Stop after this many epochs without a better validation macro-F1; 0 disables.
    early_stopping_patience: int = 0
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | mps
    # Fast paths; each one is used only where it helps on the chosen device.
    amp: str = "auto"  # auto | off | bf16 | fp16
    channels_last: str = "auto"  # auto | on | off
    compile: str = "off"  # off | on | auto
    num_workers: int = 0
    threads: int | None = None
    specaugment: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)
    # Chunk-level augmentation for E5: random gain in dB and a random time shift of the window.
    chunk_jitter: bool = False


@dataclass
class RunConfig:
    out_dir: str = "runs"
    name: str | None = None


@dataclass
class ResourcesConfig:
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    # >1 trains each trial data-parallel over this many Ray Train workers.
    workers_per_trial: int = 1


@dataclass
class WandbConfig:
    enabled: bool = True
    project: str = "mgc"
    # offline | online | disabled; offline works without a key and syncs later.
    mode: str = "offline"
    entity: str | None = None


@dataclass
class SweepConfig:
    search_space: str | None = None
    num_samples: int = 16
    max_concurrent: int = 0
    metric: str = "val_macro_f1"
    mode: str = "max"
    grace_period: int = 3
    reduction_factor: int = 3
    max_failures: int = 2
    final_seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    storage_path: str = "${MGC_RAY_RESULTS:-ray_results}"
    results_dir: str = "${MGC_RESULTS_DIR:-results}"
    ray_address: str | None = None
    num_cpus: int | None = None
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass
class ExperimentConfig:
    """How a row of the ablation table describes itself."""

    name: str = "adhoc"
    description: str = ""
    augmentation: str = "none"
    strategy: str = "Adam"


@dataclass
class Config:
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    data: DataConfig = field(default_factory=DataConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    chunks: ChunkConfig = field(default_factory=ChunkConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)


# ---------------------------------------------------------------------------------------------
# Building typed objects from plain dicts


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`; return it (ints widen to floats)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item_tp,) = typing.get_args(tp) or (Any,)
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if _is_dataclass_type(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return _build(tp, value, key)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, bool):  # YAML 1.1 reads on/off as booleans; the option meant the word
            return "on" if value else "off"
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {tp}")


def _unknown_key(key: str, valid: list[str]) -> ConfigError:
    leaf = key.rsplit(".", 1)[-1]
    prefix = key[: -len(leaf)]
    near = difflib.get_close_matches(leaf, valid, n=1)
    hint = f" (did you mean {prefix}{near[0]}?)" if near else f" (valid: {', '.join(valid)})"
    return ConfigError(f"unknown config key {key}{hint}")


def _build(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in hints:
            raise _unknown_key(full, names)
        kwargs[key] = _coerce(value, hints[key], full)
    obj = cls(**kwargs)
    return obj


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


# ---------------------------------------------------------------------------------------------
# Overrides and files


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.lr=3e-4` → (["train", "lr"], 0.0003); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    # YAML reads 3e-4 as a string (it wants a dot); numbers written that way are common.
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            pass
    return key.split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    out = raw
    for text in overrides:
        path, value = parse_override(text)
        nested: Any = value
        for part in reversed(path):
            nested = {part: nested}
        out = _deep_merge(out, nested)
    return out


def config_and_overrides(config: str | None, overrides: list[str]) -> tuple[str | None, list[str]]:
    """Command lines take `[CONFIG] [k=v ...]`: a first argument that is an override, not a
    YAML file, means "defaults plus these overrides"."""
    if config and "=" in config and not config.endswith((".yaml", ".yml")):
        return None, [config, *overrides]
    return config, list(overrides)


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    # `base: other.yaml` lets an ablation row say only what it changes from the row before.
    base = data.pop("base", None)
    if base:
        data = _deep_merge(read_yaml(path.parent / base), data)
    return data


def from_dict(raw: dict[str, Any]) -> Config:
    cfg = _build(Config, raw)
    validate(cfg)
    _expand_paths(cfg)
    return cfg


def _expand_paths(cfg: Config) -> None:
    # Resolved once here so that the config a run saves is the one it used.
    cfg.data.root = expand(cfg.data.root)
    cfg.data.extra_train_roots = [expand(p) for p in cfg.data.extra_train_roots]
    cfg.cache.dir = expand(cfg.cache.dir)
    cfg.run.out_dir = expand(cfg.run.out_dir)
    cfg.sweep.storage_path = expand(cfg.sweep.storage_path)
    cfg.sweep.results_dir = expand(cfg.sweep.results_dir)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    raw = read_yaml(path) if path else {}
    return from_dict(apply_overrides(raw, list(overrides or [])))


def validate(cfg: Config) -> None:
    """Value checks that types alone cannot express."""
    checks = [
        (cfg.features.sample_rate > 0, "features.sample_rate must be positive"),
        (cfg.features.n_fft > 0, "features.n_fft must be positive"),
        (0 < cfg.features.hop_length, "features.hop_length must be positive"),
        (cfg.features.n_mels > 0, "features.n_mels must be positive"),
        (cfg.chunks.window_s >= 0, "chunks.window_s must be >= 0 (0 = whole clip)"),
        (0 <= cfg.chunks.overlap < 1, "chunks.overlap must be in [0, 1)"),
        (0 < cfg.data.train_fraction <= 1, "data.train_fraction must be in (0, 1]"),
        (0 < cfg.data.fraction <= 1, "data.fraction must be in (0, 1]"),
        (
            cfg.train.optimizer in ("adam", "adamw", "sgd"),
            "train.optimizer must be adam, adamw or sgd",
        ),
        (cfg.train.scheduler in ("none", "cosine"), "train.scheduler must be none or cosine"),
        (cfg.train.lr > 0, "train.lr must be positive"),
        (cfg.train.batch_size > 0, "train.batch_size must be positive"),
        (cfg.cache.batch_size > 0, "cache.batch_size must be positive (files per Ray Data task)"),
        (cfg.train.epochs > 0, "train.epochs must be positive"),
        (0 <= cfg.train.label_smoothing < 1, "train.label_smoothing must be in [0, 1)"),
        (
            cfg.train.device in ("auto", "cpu", "cuda", "mps"),
            "train.device must be auto, cpu, cuda or mps",
        ),
        (
            cfg.train.amp in ("auto", "off", "bf16", "fp16"),
            "train.amp must be auto, off, bf16 or fp16",
        ),
        (
            cfg.train.channels_last in ("auto", "on", "off"),
            "train.channels_last must be auto, on or off",
        ),
        (cfg.train.compile in ("auto", "on", "off"), "train.compile must be auto, on or off"),
        (cfg.sweep.mode in ("min", "max"), "sweep.mode must be min or max"),
        (
            cfg.sweep.wandb.mode in ("offline", "online", "disabled"),
            "sweep.wandb.mode must be offline, online or disabled",
        ),
        (len(cfg.sweep.final_seeds) >= 1, "sweep.final_seeds needs at least one seed"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def expand(value: str) -> str:
    """Expand `${VAR}`, `${VAR:-default}` and `~` in a path-like config value."""
    out = value
    while "${" in out:
        start = out.index("${")
        end = out.index("}", start)
        inner = out[start + 2 : end]
        name, _, default = inner.partition(":-")
        out = out[:start] + os.environ.get(name, default) + out[end + 1 :]
    return os.path.expanduser(out)


def save_config(cfg: Config, path: str | Path) -> Path:
    """Write the fully resolved config (with paths expanded as they were used)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return path
