"""The configuration schema: typed dataclasses with every option's default and meaning.

Loading, merging and overrides live in `mgc.core.config`, which re-exports these classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class DataConfig:
    # Env defaults keep one YAML usable on a laptop, in CI and on a cluster's shared storage.
    root: str = "${oc.env:MGC_DATA_ROOT,data/gtzan}"
    # "stratified" (70/15/15 by track, seeded), "fault_filtered", or a split JSON's path.
    split: str = "stratified"
    split_seed: int = 42
    train_fraction: float = 1.0  # of the training tracks (E5 data scale), stratified, seeded
    fraction: float = 1.0  # of every part's tracks (smoke runs), stratified, seeded
    extra_train_roots: list[str] = field(default_factory=list)  # added to training only (E5)
    # A missing or empty `root` is filled with GTZAN from the internet (mgc.data.gtzan.ensure_dataset); false:
    # stop with the command that lays out a local copy instead.
    download: bool = True


@dataclass
class FeatureConfig:
    sample_rate: int = 22050
    n_fft: int = 2048
    hop_length: int = 512
    n_mels: int = 128
    f_min: float = 0.0
    f_max: float | None = None
    top_db: float | None = 80.0  # dB floor below each track's peak; null disables it
    # How mel power is compressed. "db": 10·log10 with the top_db floor (librosa.power_to_db).
    # "log10_10000": log10(10000·power + 1), musicnn's input (top_db unused); see MUSICNN_FEATURES
    # in mgc.models.musicnn for the whole front end its pretrained weights expect.
    scale: Literal["db", "log10_10000"] = "db"
    # RMS level (dBFS) every decoded file, or each 60 s segment of a long stream, is scaled to
    # before its log-mel; null keeps the level as recorded. A scale without a per-track floor
    # ("log10_10000") hears a quieter copy as other music: GTZAN's own clips span 18 dB of RMS
    # (5th to 95th percentile, median -17 dBFS), and a -12 dB gain changed a musicnn probe's
    # answer on a third of the test clips of bench/robustness.py.
    loudness_db: float | None = None
    # Everything above this frequency (Hz) is dropped before the mel projection (the filterbank's
    # weights on higher STFT bins are zero), in training and prediction alike: the model hears
    # only the band a telephone or a low-rate file still carries, so such a file and its
    # full-band original look alike to it. The mel bands keep their places (a pretrained
    # trunk's input layout is unchanged); those above it read as silence. null: the full band.
    lowpass_hz: float | None = None


@dataclass
class ChunkConfig:
    window_s: float = 3.0  # 30 takes a whole GTZAN clip; shorter tracks are padded
    overlap: float = 0.0  # shared with the next window: 0 for 3 s segments, 0.5 for 10 s
    normalize: bool = True  # zero mean, unit variance per chunk


@dataclass
class CacheConfig:
    # A URI (s3://bucket/mgc-cache) lets remote Ray workers share one cache.
    dir: str = "${oc.env:MGC_CACHE_DIR,.mgc_cache}"
    ray_address: str | None = None  # null starts (or joins) a local Ray
    num_cpus: int | None = None
    # Most files per Ray Data task (each CPU still gets >= 4 tasks; a task costs tens of ms).
    batch_size: int = 32


@dataclass
class ModelConfig:
    name: str = "cnn4"
    dropout: float = 0.3
    width: int = 32
    # torchvision models: ImageNet weights path or "download"; musicnn: "msd" or "mtt" (its
    # Million Song Dataset or MagnaTagATune tagging weights, bundled); null: random init.
    pretrained: str | None = None
    freeze: bool = False  # musicnn: train the new head only, the pretrained trunk stays fixed
    # musicnn: keep only its front end fixed (the mel-band convs, ~97 % of its FLOPs) and train
    # the mid end, back end and head from the pretrained weights: a fine-tune whose costly part
    # runs once per window (remembered like a probe's embeddings), hundreds of times cheaper
    # than training every layer on a CPU.
    freeze_front_end: bool = False
    # musicnn: what its new head reads. "penultimate" (200, musicnn's last hidden layer) or
    # "pooled" (1506: max and mean over time of every front- and mid-end channel, batch-normed
    # with the pretrained statistics, i.e. what musicnn's own dense layer reads), or
    # "pooled+low" (3012: pooled beside the same from the front end's filters that see nothing
    # above lowband_hz, which band-limiting leaves as they were; one front-end pass for both).
    embedding: str = "penultimate"
    lowband_hz: float = 3500.0  # musicnn, embedding pooled+low: the low view's cut-off
    head_hidden: int = 0  # musicnn: 0 = a linear head; n = one hidden ReLU layer of n units
    # musicnn with a frozen trunk: that many heads on one trunk pass, the model's probabilities
    # the mean of theirs. `mgc.publish --ensemble` makes one from runs that differ only in seed
    # (their heads, the shared trunk); 1: a plain head.
    heads: int = 1


@dataclass
class SpecAugmentConfig:
    enabled: bool = False
    freq_mask: int = 16
    time_mask: int = 24
    n_freq_masks: int = 2
    n_time_masks: int = 2


# What `augment.conditions` may name (checked by mgc.core.config.validate).
AUGMENT_CONDITIONS = ("bandlimit", "noise", "codec", "gain")
AUGMENT_CODECS = ("mp3", "aac")
AUGMENT_NOISE_COLORS = ("white", "pink")


@dataclass
class AugmentConfig:
    """Waveform augmentations for the way music arrives outside the dataset: phone-band
    recordings, noise, lossy codecs, loudness. They act on the audio, so `mgc.prepare` makes
    `copies` augmented log-mels of every training track once (each seeded by the seed, the
    track's audio content and the copy's number) and stores them beside the clean one; training
    then draws, per track and epoch, the clean log-mel or one of its copies. Validation and test
    tracks are never augmented. 0 copies (the default) changes nothing: no copies are made and
    the feature cache's keys stay as they were."""

    copies: int = 0  # augmented log-mels per training track; 0: off
    conditions: list[str] = field(default_factory=lambda: list(AUGMENT_CONDITIONS))
    per_copy: int = 1  # conditions combined in one copy, drawn without repeats
    seed: int = 0
    # bandlimit: resampled down to one of these rates (Hz) and back up: nothing above half of it
    bandlimit_rates: list[int] = field(default_factory=lambda: [8000, 11025, 16000])
    # noise: white or pink, at an SNR (dB) drawn uniformly from [low, high]
    noise_snr_db: list[float] = field(default_factory=lambda: [10.0, 30.0])
    noise_colors: list[str] = field(default_factory=lambda: list(AUGMENT_NOISE_COLORS))
    # codec: encoded and decoded again (PyAV's FFmpeg: LAME mp3, FFmpeg's AAC) at one bitrate
    codecs: list[str] = field(default_factory=lambda: list(AUGMENT_CODECS))
    codec_kbps: list[int] = field(default_factory=lambda: [32, 48, 64])
    # gain: dB drawn uniformly from [low, high]; samples clipped to [-1, 1] as a file would be
    gain_db: list[float] = field(default_factory=lambda: [-12.0, 12.0])


@dataclass
class TrainConfig:
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 32
    epochs: int = 30
    scheduler: Literal["none", "cosine"] = "none"
    warmup_epochs: int = 0
    label_smoothing: float = 0.0
    early_stopping_patience: int = 0  # epochs without a better val macro-F1; 0 disables
    seed: int = 0
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    # Fast paths, each used only where it helps on the chosen device.
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    channels_last: Literal["auto", "on", "off"] = "auto"
    compile: Literal["auto", "on", "off"] = "off"
    threads: int | None = None
    specaugment: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)
    chunk_jitter: bool = False  # E5: each training window shifted by up to half a step
    # Consistency under augmentation (needs augment.copies): every step trains on the clean
    # windows and on the same windows of a random augmented copy, and adds this weight times
    # KL(clean prediction || copy's prediction), the clean side held fixed, so the model learns
    # to give a degraded recording the clean one's answer. 0: off (one version per track).
    consistency: float = 0.0
    # What an epoch is: 0 = every window of every training track; N = N windows per track at
    # random places, drawn afresh each epoch (a fixed cost per epoch, the same for every row).
    windows_per_track: int = 0
    # A refit (sweep.final.refit): the validation tracks train too, so the run's validation
    # figures are no longer held out, and it stops after `stop_epoch` (0: train.epochs) while
    # its schedule still spans train.epochs, retracing the first fit's up to that epoch.
    include_valid: bool = False
    stop_epoch: int = 0


@dataclass
class RunConfig:
    out_dir: str = "runs"
    name: str | None = None


@dataclass
class ResourcesConfig:
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    workers_per_trial: int = 1  # >1 trains each trial data-parallel with Ray Train


@dataclass
class WandbConfig:
    enabled: bool = True
    project: str = "mgc"
    mode: Literal["offline", "online", "disabled"] = "offline"  # needs no key; sync later
    entity: str | None = None


@dataclass
class FinalBudgetConfig:
    """What the final seeds train at: the full fidelity, one rule for every row. The search's
    trials train at `train.*` (cheap, low fidelity); each of these, when set, replaces that
    value for the final seeds. Unset: the seeds train as the trials did."""

    epochs: int | None = None  # at most; early stopping may end a seed sooner
    windows_per_track: int | None = None  # 0: every window of every training track
    early_stopping_patience: int | None = None  # epochs without a better val macro-F1
    # After each seed's fit on train (early-stopped on validation, which says when), fit again
    # from scratch on train + validation for that fit's best epoch count, and test the refit:
    # every labelled track trains the tested model. The first fit stays in seed_<n>/select/.
    refit: bool = False


@dataclass
class SweepConfig:
    # "full": the row as the table reports it. "quick": a look in minutes (few trials, short
    # seeds), written under <results_dir>/quick/ and marked, never in the main table.
    budget: Literal["full", "quick"] = "full"
    search_space: str | None = None
    # Another row's name: train this row's final seeds on that row's stored search
    # (results/<row>/search.json) instead of searching again, e.g. to check a row's result at
    # twice the budget with the very same configuration.
    reuse_search: str | None = None
    num_samples: int = 16
    max_concurrent: int = 0
    metric: str = "val_macro_f1"
    mode: Literal["min", "max"] = "max"
    grace_period: int = 3
    reduction_factor: int = 3
    max_failures: int = 2
    final_seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    final: FinalBudgetConfig = field(default_factory=FinalBudgetConfig)
    storage_path: str = "${oc.env:MGC_RAY_RESULTS,ray_results}"
    results_dir: str = "${oc.env:MGC_RESULTS_DIR,results}"
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
    # The row this one changes one thing from, for the table's ΔF1 (on the same split); unset:
    # the ablation row before it.
    compare_with: str | None = None


@dataclass
class Config:
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    data: DataConfig = field(default_factory=DataConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    chunks: ChunkConfig = field(default_factory=ChunkConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    run: RunConfig = field(default_factory=RunConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
