"""Training throughput of the CNNs: fp32 eager against each fast path, side by side in one run.

    python bench/train_throughput.py [--models small_cnn cnn4 vgg5 resnet18] [--compile]
                                     [--steps N] [--repeats 3] [--threads 2]
    python bench/train_throughput.py --accuracy DATA_ROOT [--accuracy-model vgg5]
                                     [--epochs 3] [--train-fraction 0.3] [--fast-variant auto]

Throughput mode: one training step = forward + backward + Adam step on a batch of 3-second
chunks, (B, 1, 128, 129) per-chunk-normalised synthetic log-mels, 10 classes. Per model:
  (a) fp32                     plain fp32 eager, contiguous NCHW — the baseline (ratio 1.00);
  (b) channels_last, bf16, bf16+channels_last, and with --compile: compile, compile+channels_last
      (torch.compile/inductor; its build time is reported apart and left out of the rate);
      bf16 is marked "emulated" where the CPU has no native bf16 (no AVX-512 BF16 / AMX);
  (c) mgc-default              `mgc.run.train.train_epoch` itself with
      `mgc.run.train.fast_path(load_config().train)`: what a user gets with the shipped defaults
      (train.amp=auto, channels_last=auto, compile=off), batches sliced from a ChunkSet.
Each variant is warmed up, then timed over N steps; repeats go round-robin over the variants
so that a burst of load from other processes hits them all alike; the median repeat counts.
A variant whose first step is over 3x the baseline's (emulated bf16 here) is clearly not a
candidate: that first step is kept as its timing and it skips the repeats, to keep the run short.
Rates are wall-clock samples/s; "cpu ratio" is the same ratio on process CPU time, which other
processes' load disturbs less (wall time is what a user waits, CPU time what the work costs);
"util" is CPU seconds per wall second per thread, near 1 when the threads had the cores.
Results: a table, and bench/out/train_throughput.json.

Accuracy mode (--accuracy DATA_ROOT) trains one model twice with `mgc.run.train.fit` on the same
data, seed and split — fp32 eager (train.amp=off channels_last=off compile=off) and the fast
variant — and prints both test accuracies and the seconds per epoch.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mgc.core.config import ChunkConfig, FeatureConfig, ModelConfig, load_config  # noqa: E402
from mgc.core.device import FastPath, choose_fast_path, cpu_has_bf16  # noqa: E402
from mgc.data.loader import ChunkSet, TrackArray  # noqa: E402
from mgc.features.frontend import Frontend  # noqa: E402
from mgc.features.transforms import normalize_chunks  # noqa: E402
from mgc.models import build_model  # noqa: E402
from mgc.run.train import fast_path, make_optimizer, train_epoch, train_step  # noqa: E402

DEFAULT_MODELS = ["small_cnn", "cnn4", "vgg5", "resnet18"]
OUT_JSON = Path(__file__).resolve().parent / "out" / "train_throughput.json"
SLOW_FACTOR = 3.0  # first step this many times the baseline's: time it once and move on

# variant name → (autocast dtype, channels_last, compile)
VARIANTS: dict[str, tuple[torch.dtype | None, bool, bool]] = {
    "fp32": (None, False, False),
    "channels_last": (None, True, False),
    "bf16": (torch.bfloat16, False, False),
    "bf16+channels_last": (torch.bfloat16, True, False),
    "compile": (None, False, True),
    "compile+channels_last": (None, True, True),
}
MGC_DEFAULT = "mgc-default"

# variant name → the config overrides that make `mgc.run.train.fit` run it (accuracy mode)
VARIANT_OVERRIDES: dict[str, list[str]] = {
    name: [
        f"train.amp={'bf16' if amp else 'off'}",
        f"train.channels_last={'on' if cl else 'off'}",
        f"train.compile={'on' if comp else 'off'}",
    ]
    for name, (amp, cl, comp) in VARIANTS.items()
}


# ---------------------------------------------------------------------------------------------
# Throughput


@dataclass
class Runner:
    """One model under one variant: `run(n)` trains n steps and returns the seconds taken."""

    name: str
    run: Callable[[int], float]
    note: str = ""
    first_step_s: float = 0.0
    warm_step_s: float = 0.0
    steps: int = 0
    times: list[float] = field(default_factory=list)
    cpu_times: list[float] = field(default_factory=list)
    slow: bool = False

    def timed(self, n: int) -> None:
        c0 = time.process_time()  # CPU seconds of all this process's threads
        self.times.append(self.run(n))
        self.cpu_times.append(time.process_time() - c0)


def synthetic_batches(n: int, batch: int, n_mels: int, frames: int, classes: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.randn(batch, 1, n_mels, frames, generator=g) * 10.0 - 40.0  # dB-like scale
        out.append((normalize_chunks(x), torch.randint(0, classes, (batch,), generator=g)))
    return out


def step_runner(
    model: nn.Module, fast: FastPath, batches: list, train_cfg: Any
) -> Callable[[int], float]:
    """The body of `mgc.run.train.train_epoch` on prepared batches (no slicing from tracks)."""
    model = copy.deepcopy(model).to(fast.device)
    if fast.channels_last:
        model = model.to(memory_format=torch.channels_last)
    train_model = torch.compile(model) if fast.compile else model
    optimizer = make_optimizer(model, train_cfg)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    i = 0

    def run(n: int) -> float:
        nonlocal i
        t0 = time.perf_counter()
        for _ in range(n):
            x, y = batches[i % len(batches)]
            i += 1
            train_step(train_model, x, y, optimizer, loss_fn, fast)
        return time.perf_counter() - t0

    return run


def mgc_default_runner(
    model: nn.Module, batch: int, n_mels: int, frames: int, classes: int
) -> tuple[Callable[[int], float], FastPath]:
    """`mgc.run.train.train_epoch` as `fit` calls it, on a ChunkSet of synthetic 30-second tracks."""
    cfg = load_config(None, [f"train.batch_size={batch}"])
    fast = fast_path(cfg.train)
    model = fast.place(copy.deepcopy(model))
    train_model = torch.compile(model) if fast.compile else model
    optimizer = make_optimizer(model, cfg.train)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.train.label_smoothing)
    g = torch.Generator().manual_seed(0)
    per_track = 10  # a 30-second GTZAN clip gives ten 3-second chunks
    tracks = [
        TrackArray(f"t{i}", i % classes, torch.randn(n_mels, frames * per_track, generator=g))
        for i in range(64)
    ]

    features = FeatureConfig(n_mels=n_mels)
    window_s = frames * features.hop_length / features.sample_rate  # windows of `frames` frames
    frontend = Frontend(features, ChunkConfig(window_s=window_s))
    assert frontend.windowing.window == frames

    def chunk_set(n_chunks: int) -> ChunkSet:
        idx = torch.arange(n_chunks) % (len(tracks) * per_track)
        return ChunkSet(tracks, frontend, idx // per_track, (idx % per_track) * frames)

    def run(n: int) -> float:
        chunks = chunk_set(n * batch)
        t0 = time.perf_counter()
        train_epoch(train_model, chunks, optimizer, loss_fn, None, fast, cfg, g)
        return time.perf_counter() - t0

    return run, fast


def describe_fast(fast: FastPath) -> str:
    parts = [
        "bf16" if fast.amp_dtype is torch.bfloat16 else "fp16" if fast.amp_dtype else "fp32",
        "channels_last" if fast.channels_last else "NCHW",
    ]
    if fast.compile:
        parts.append("compile")
    return "+".join(parts)


def bench_model(name: str, args: argparse.Namespace, batches: list) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    base = build_model(ModelConfig(name=name), args.classes, args.n_mels)
    params = sum(p.numel() for p in base.parameters())
    train_cfg = load_config().train
    cpu = torch.device("cpu")
    bf16_note = "" if cpu_has_bf16() else "emulated, no native bf16"

    runners: list[Runner] = []
    for vname, (amp, cl, comp) in VARIANTS.items():
        if comp and not args.compile:
            continue
        if vname not in args.variants:
            continue
        fast = FastPath(cpu, amp, cl, comp)
        runners.append(
            Runner(vname, step_runner(base, fast, batches, train_cfg), bf16_note if amp else "")
        )
    if MGC_DEFAULT in args.variants:
        run, fast = mgc_default_runner(
            base, args.batch_size, args.n_mels, args.frames, args.classes
        )
        note = describe_fast(fast)
        if fast.amp_dtype is torch.bfloat16 and bf16_note:
            note += f" ({bf16_note})"
        runners.append(Runner(MGC_DEFAULT, run, note))

    # warm-up (compile builds here), one variant after another
    baseline_warm = None
    for r in runners:
        t0 = time.perf_counter()
        r.timed(1)
        r.first_step_s = r.times[0]
        if (
            baseline_warm
            and r.first_step_s > SLOW_FACTOR * baseline_warm
            and "compile" not in r.name
        ):
            # clearly not a candidate: its first step is its timing (one-off costs are small
            # beside a step this long), and it is left out of the repeats
            r.slow, r.warm_step_s, r.steps = True, r.first_step_s, 1
        else:
            r.times.clear()
            r.cpu_times.clear()
            r.warm_step_s = r.first_step_s
            for _ in range(args.warmup - 1):
                r.warm_step_s = r.run(1)
            r.steps = args.steps or max(2, min(50, round(args.target_seconds / r.warm_step_s)))
        if r.name == "fp32":
            baseline_warm = r.warm_step_s
        print(
            f"  {name:10s} {r.name:22s} warm-up {time.perf_counter() - t0:6.1f}s "
            f"(first step {r.first_step_s:.2f}s), "
            + ("slow: first step kept as its timing" if r.slow else f"timing {r.steps} step(s)"),
            flush=True,
        )

    # timed repeats, round-robin over the variants
    for _ in range(args.repeats):
        for r in runners:
            if not r.slow:
                r.timed(r.steps)

    rows = []
    base_rate = base_cpu_rate = None
    for r in runners:
        med = statistics.median(r.times)
        rate = r.steps * args.batch_size / med
        cpu_rate = r.steps * args.batch_size / statistics.median(r.cpu_times)
        if r.name == "fp32":
            base_rate, base_cpu_rate = rate, cpu_rate
        row = {
            "model": name,
            "params": params,
            "variant": r.name,
            "note": r.note + ("; slow: one step timed" if r.slow else ""),
            "samples_per_s": rate,
            "samples_per_cpu_s": cpu_rate,
            # CPU seconds per wall second per thread: near 1 when the threads had the cores
            "cpu_util": statistics.median(
                c / (w * args.threads) for c, w in zip(r.cpu_times, r.times, strict=True)
            ),
            "step_s": med / r.steps,
            "steps": r.steps,
            "repeats": len(r.times),
            "times_s": r.times,
            "cpu_times_s": r.cpu_times,
            "first_step_s": r.first_step_s,
        }
        if "compile" in r.name:
            row["compile_s"] = max(0.0, r.first_step_s - med / r.steps)
        rows.append(row)
    for row in rows:
        row["ratio"] = row["samples_per_s"] / base_rate if base_rate else None
        row["cpu_ratio"] = row["samples_per_cpu_s"] / base_cpu_rate if base_cpu_rate else None
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    print()
    print(
        f"{'model':10s} | {'variant':22s} | {'samples/s':>9s} | {'ratio':>5s} | "
        f"{'cpu ratio':>9s} | {'util':>4s} | note"
    )
    print("-" * 103)
    for row in rows:
        ratio = f"{row['ratio']:.2f}" if row["ratio"] is not None else "  -"
        cpu_ratio = f"{row['cpu_ratio']:.2f}" if row["cpu_ratio"] is not None else "  -"
        note = row["note"]
        if "compile_s" in row:
            note = (note + "; " if note else "") + f"compile {row['compile_s']:.0f}s (excluded)"
        print(
            f"{row['model']:10s} | {row['variant']:22s} | {row['samples_per_s']:9.1f} | "
            f"{ratio:>5s} | {cpu_ratio:>9s} | {row['cpu_util']:4.2f} | {note}"
        )


def best_per_model(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    best: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["variant"] in (MGC_DEFAULT, "fp32") or row["ratio"] is None:
            continue
        if row["model"] not in best or row["ratio"] > best[row["model"]]["ratio"]:
            best[row["model"]] = {"variant": row["variant"], "ratio": row["ratio"]}
    return best


def machine_info(threads: int) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": cpu_has_bf16(),
        "threads": threads,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(not set)"),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def throughput(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    info = machine_info(args.threads)
    print(
        f"{info['cpu']} | torch {info['torch']} ({info['cpu_capability']}) | "
        f"{args.threads} threads | OMP_WAIT_POLICY {info['omp_wait_policy']} | "
        f"native bf16: {info['native_bf16']} | load average {info['load_average']}"
    )
    fast = choose_fast_path(torch.device("cpu"))
    print(f"mgc default fast path on this CPU: {describe_fast(fast)}")
    batches = synthetic_batches(4, args.batch_size, args.n_mels, args.frames, args.classes)
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for name in args.models:
        rows += bench_model(name, args, batches)
    print_table(rows)
    best = best_per_model(rows)
    print()
    for model, b in best.items():
        print(f"best for {model}: {b['variant']} at {b['ratio']:.2f}x fp32 eager")
    print(f"\n({time.perf_counter() - t0:.0f}s; other processes on the CPUs make rates noisy)")
    shared = [r for r in rows if r["cpu_util"] < 0.8]
    if shared:
        print(
            f"note: util < 0.8 in {len(shared)} of {len(rows)} rows: the {args.threads} threads "
            "did not have the cores to themselves (other load); compare ratios, not rates"
        )
    info["load_average_after"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = {
        k: getattr(args, k)
        for k in ("batch_size", "n_mels", "frames", "classes", "steps", "repeats", "warmup")
    }
    settings["target_seconds"] = args.target_seconds
    report = {
        "machine": info,
        "settings": settings,
        "mgc_default_fast_path": describe_fast(fast),
        "results": rows,
        "best": best,
    }
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    return 0


# ---------------------------------------------------------------------------------------------
# Accuracy


def pick_fast_variant(requested: str, model: str, bench_json: Path) -> str:
    if requested != "auto":
        return requested
    if bench_json.is_file():
        best = json.loads(bench_json.read_text()).get("best", {}).get(model)
        if best and best["ratio"] > 1.0:
            print(f"fast variant from {bench_json}: {best['variant']} ({best['ratio']:.2f}x)")
            return best["variant"]
    print("no throughput result for this model: using channels_last")
    return "channels_last"


def epoch_seconds(run_dir: Path) -> float:
    with open(run_dir / "train_log.csv", newline="") as fh:
        secs = [float(r["seconds"]) for r in csv.DictReader(fh) if r.get("seconds")]
    return statistics.median(secs) if secs else float("nan")


def accuracy(args: argparse.Namespace) -> int:
    import logging

    from mgc.data.loader import load_split_data
    from mgc.data.prepare import prepare
    from mgc.run.train import fit

    logging.basicConfig(level=logging.INFO, format="%(message)s")  # fit's per-epoch lines
    variant = pick_fast_variant(args.fast_variant, args.accuracy_model, Path(args.out))
    if variant not in VARIANT_OVERRIDES:
        print(f"error: unknown variant {variant!r} (valid: {', '.join(VARIANT_OVERRIDES)})")
        return 2
    common = [
        f"data.root={args.accuracy}",
        f"model.name={args.accuracy_model}",
        f"train.epochs={args.epochs}",
        f"data.train_fraction={args.train_fraction}",
        f"train.threads={args.threads}",
        "train.device=cpu",
        *args.set,
    ]
    runs = {"fp32": VARIANT_OVERRIDES["fp32"], variant: VARIANT_OVERRIDES[variant]}
    base_cfg = load_config(args.config, common)
    torch.set_num_threads(args.threads)
    prepare(base_cfg, use_ray=False)
    data = load_split_data(base_cfg)  # once: both runs see the same tracks and split
    out_root = Path(args.accuracy_out)
    results = {}
    for name, overrides in runs.items():
        cfg = load_config(args.config, common + overrides)
        print(f"\n== {name}: {' '.join(overrides)}", flush=True)
        run_dir = out_root / f"{args.accuracy_model}-{name.replace('+', '-')}"
        t0 = time.perf_counter()
        result = fit(cfg, run_dir=run_dir, data=data)
        m = result.metrics
        results[name] = {
            "run_dir": str(run_dir),
            "fast_path": m.get("fast_path"),
            "test_chunk_accuracy": m["test"]["chunk_accuracy"],
            "test_track_accuracy": m["test"]["track_accuracy"],
            "test_chunk_macro_f1": m["test"]["chunk_macro_f1"],
            "valid_chunk_accuracy": m["valid"]["chunk_accuracy"],
            "epoch_s": epoch_seconds(run_dir),
            "total_s": time.perf_counter() - t0,
        }
    print(f"\n{args.accuracy_model}, {args.epochs} epoch(s), train_fraction {args.train_fraction}:")
    print(f"{'variant':22s} | test chunk acc | test track acc | chunk F1 | s/epoch | speed-up")
    base_epoch = results["fp32"]["epoch_s"]
    for name, r in results.items():
        print(
            f"{name:22s} | {r['test_chunk_accuracy']:14.3f} | {r['test_track_accuracy']:14.3f} | "
            f"{r['test_chunk_macro_f1']:8.3f} | {r['epoch_s']:7.1f} | "
            f"{base_epoch / r['epoch_s']:7.2f}x"
        )
    out = out_root / "accuracy.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": args.accuracy_model, "runs": results}, indent=2))
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument(
        "--variants",
        nargs="+",
        default=[*VARIANTS, MGC_DEFAULT],
        help="subset of: " + ", ".join([*VARIANTS, MGC_DEFAULT]) + " (fp32 is always run)",
    )
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument(
        "--steps",
        type=int,
        default=0,
        help="timed steps per repeat; 0 (default) picks them per variant, about "
        "--target-seconds per repeat, at least 2",
    )
    parser.add_argument("--target-seconds", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=3, help="median of this many timings")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--n-mels", type=int, default=128)
    parser.add_argument("--frames", type=int, default=129, help="129 frames = 3 s at hop 512")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--out", default=str(OUT_JSON))
    acc = parser.add_argument_group("accuracy mode")
    acc.add_argument("--accuracy", metavar="DATA_ROOT", help="train fp32 vs the fast variant")
    acc.add_argument("--accuracy-model", default="vgg5")
    acc.add_argument(
        "--fast-variant",
        default="auto",
        help="variant to compare with fp32; auto = best in --out for the model, else channels_last",
    )
    acc.add_argument("--epochs", type=int, default=3)
    acc.add_argument("--train-fraction", type=float, default=0.3)
    acc.add_argument("--config", help="base YAML (e.g. ablations/e0.yaml); default: built-in")
    acc.add_argument("--set", nargs="*", default=[], help="extra section.key=value overrides")
    acc.add_argument("--accuracy-out", default=str(OUT_JSON.parent / "accuracy"))
    args = parser.parse_args(argv)
    if args.accuracy:
        return accuracy(args)
    if "fp32" not in args.variants:
        args.variants = ["fp32", *args.variants]
    unknown = set(args.variants) - {*VARIANTS, MGC_DEFAULT}
    if unknown:
        parser.error(f"unknown variants: {', '.join(sorted(unknown))}")
    return throughput(args)


if __name__ == "__main__":
    raise SystemExit(main())
