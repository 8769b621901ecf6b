"""Preprocessing throughput: the seed projects' librosa loop against `mgc.data.prepare`, in one run.

    python bench/preprocess.py --data ../shared/data/gtzan [--limit N] [--cpus 2] [--rounds 3]

(a) librosa loop: librosa.load + feature.melspectrogram + power_to_db, one file at a time, in
    this process (librosa warmed up first so its one-off JIT start is not counted);
(b) mgc.data.prepare cold: empty cache, Ray Data over --cpus workers;
(c) mgc.data.prepare warm: the same again, everything cached.
(a) and (b) alternate for --rounds rounds, Ray shut down while the loop runs; each round gives a
ratio and the median of those is the result. Ray's start-up (ray.init, each worker's first
imports, Ray Data's helper actors) is timed on its own and reported beside the rates, not inside
them; the last line adds it back. Ends with where a track's time goes on one core.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mgc.core.cluster import init_ray  # noqa: E402
from mgc.core.config import load_config  # noqa: E402
from mgc.data.datasets import discover  # noqa: E402
from mgc.data.prepare import prepare  # noqa: E402


def librosa_loop(paths: list[str]) -> float:
    import librosa

    y, sr = librosa.load(paths[0], sr=22050)  # warm-up: numba/resampy first-call costs
    librosa.power_to_db(
        librosa.feature.melspectrogram(y=y, sr=sr, n_fft=2048, hop_length=512, n_mels=128)
    )
    t0 = time.perf_counter()
    for p in paths:
        y, sr = librosa.load(p, sr=22050)
        mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=2048, hop_length=512, n_mels=128)
        librosa.power_to_db(mel, top_db=80.0)
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder-per-genre dataset (e.g. GTZAN)")
    parser.add_argument(
        "--limit", type=int, default=0, help="use only the first N tracks (0 = all)"
    )
    parser.add_argument("--cpus", type=int, default=2, help="CPUs for the local Ray")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="files per Ray Data batch (default: config)"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating loop / cold-prepare pairs (median)"
    )
    parser.add_argument(
        "--breakdown", type=int, default=40, help="tracks for the per-stage costs on one core"
    )
    parser.add_argument("--out", default="bench/out/preprocess.json")
    parser.add_argument("--stage-costs", choices=["default", "keep"], help=argparse.SUPPRESS)
    parser.add_argument("files", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.stage_costs:  # the child process of stage_costs_fresh
        print(json.dumps(stage_costs(args.files, keep=args.stage_costs == "keep")))
        return 0

    tracks = discover(args.data)
    if args.limit:
        step = max(1, len(tracks) // args.limit)  # spread over genres, not the first folder only
        tracks = tracks[::step][: args.limit]
    import ray

    work = Path(tempfile.mkdtemp(prefix="mgc-bench-"))
    try:
        # Link the chosen files into a dataset folder of their own so every path sees the same set.
        root = work / "data"
        for t in tracks:
            dst = root / t.genre / Path(t.path).name
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.symlink_to(t.path)
        paths = [str(root / t.genre / Path(t.path).name) for t in tracks]
        n = len(paths)
        print(f"{n} tracks from {args.data}; {args.cpus} CPUs for Ray")

        overrides = [f"data.root={root}", f"cache.num_cpus={args.cpus}"]
        if args.batch_size:
            overrides.append(f"cache.batch_size={args.batch_size}")

        # Rounds alternate the loop and a cold prepare (a fresh cache each time), so that a
        # change in the machine's speed during the run reaches both sides of a ratio alike. Ray
        # is shut down while the loop runs, so its idle processes take nothing from the loop.
        loops, colds, inits, warmups = [], [], [], []
        for i in range(args.rounds):
            if ray.is_initialized():
                ray.shutdown()
            loops.append(librosa_loop(paths))
            inits.append(init_ray(None, args.cpus, quiet=True))
            warmups.append(warm_workers(args.cpus))
            cfg = load_config(None, [*overrides, f"cache.dir={work / f'cache-{i}'}"])
            before = cpu_seconds_by_process()
            cold = prepare(cfg)
            cpu_use = cpu_use_by_role(before, cpu_seconds_by_process())
            assert cold.computed == n - cold.failed, cold
            colds.append(cold.seconds)
            print(
                f"round {i + 1}: (a) librosa loop {n / loops[-1]:6.1f} tracks/s, (b) mgc.data.prepare "
                f"cold {n / colds[-1]:6.1f} tracks/s: {loops[-1] / colds[-1]:.2f}x; Ray start-up "
                f"{inits[-1]:.1f} s ray.init + {warmups[-1]:.1f} s worker warm-up (not in rates)"
            )
        warm = prepare(cfg)
        assert warm.computed == 0
        loop_s, cold_s = statistics.median(loops), statistics.median(colds)
        ratios = sorted(lp / c for lp, c in zip(loops, colds, strict=True))
        print(f"(a) librosa loop, 1 process : {n / loop_s:7.1f} tracks/s  (median {loop_s:.1f} s)")
        print(
            f"(b) mgc.data.prepare cold        : {n / cold_s:7.1f} tracks/s  (median {cold_s:.1f} s)"
        )
        print(
            f"(c) mgc.data.prepare warm        : {n / warm.seconds:7.1f} tracks/s  ({warm.seconds:.2f} s)"
        )
        print(
            f"ratio cold / librosa loop   : {statistics.median(ratios):.2f}x median of the rounds "
            f"({', '.join(f'{r:.2f}' for r in ratios)})"
        )
        print(f"ratio warm / librosa loop   : {loop_s / warm.seconds:.1f}x")
        if cpu_use:
            print(
                f"CPU-seconds during the last cold run ({args.cpus * cold.seconds:.1f} available): "
                + ", ".join(f"{role} {sec:.2f}" for role, sec in cpu_use.items())
            )
        ray_s, warmup_s = statistics.median(inits), statistics.median(warmups)
        print(f"Ray start-up, median        : {ray_s:.1f} s ray.init + {warmup_s:.1f} s warm-up")
        total = cold_s + ray_s + warmup_s
        print(
            f"cold incl. Ray start-up     : {n / total:7.1f} tracks/s ({loop_s / total:.2f}x the loop)"
        )
        sample = paths[:: max(1, n // args.breakdown)][: args.breakdown]
        default, kept = stage_costs_fresh(sample, False), stage_costs_fresh(sample, True)
        print(
            f"per track, one core, {len(sample)} tracks, fresh processes: decode "
            f"{kept['decode_libsndfile_ms']:.1f} ms with libsndfile, {kept['decode_ms']:.1f} ms "
            f"as mgc decodes; log-mel {default['logmel_ms']:.1f} ms with glibc's defaults, "
            f"{kept['logmel_ms']:.1f} ms with freed memory kept (as the workers run), "
            f"{kept['logmel_torchaudio_ms']:.1f} ms for torchaudio's whole-clip MelSpectrogram + "
            f"AmplitudeToDB; hash + write {kept['hash_write_ms']:.1f} ms"
        )
        costs = {"tracks": len(sample), "glibc_default": default, "freed_memory_kept": kept}
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(
            json.dumps(
                {
                    "tracks": n,
                    "cpus": args.cpus,
                    "rounds": args.rounds,
                    "librosa_loop_s": loops,
                    "prepare_cold_s_rounds": colds,
                    "ratio_cold_rounds": ratios,
                    "ray_init_s": inits,
                    "worker_warmup_s": warmups,
                    "prepare_cold_s": cold_s,
                    "prepare_warm_s": warm.seconds,
                    "ratio_cold": statistics.median(ratios),
                    "ratio_warm": loop_s / warm.seconds,
                    "per_track_one_core": costs,
                    "cpu_seconds_last_cold_run": cpu_use,
                },
                indent=2,
            )
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def stage_costs(paths: list[str], keep: bool, repeats: int = 2) -> dict[str, float]:
    """Milliseconds per track of each stage of `mgc.data.prepare.process_file`, on one thread:
    decoding with libsndfile and as mgc decodes, the log-mel interleaved with decoding as in a
    worker, and hashing + writing the array. With `keep`, glibc keeps freed memory first (what
    the prepare workers do). Meant for a fresh process: glibc's allocator adapts as a process runs,
    and keep_freed_memory cannot be undone."""
    import soundfile as sf
    import torch
    import torchaudio.transforms as T

    from mgc.core.audio import load_audio
    from mgc.core.config import FeatureConfig
    from mgc.data.cache import FeatureStore, content_hash
    from mgc.data.prepare import keep_freed_memory
    from mgc.features.transforms import LogMel, logmel_numpy

    if keep:
        keep_freed_memory()
    torch.set_num_threads(1)
    features = FeatureConfig()
    logmel = LogMel.from_config(features)
    # The plain torchaudio pipeline on the whole clip, the same parameters: the baseline for
    # LogMel's blocked STFT and sparse mel projection.
    plain = torch.nn.Sequential(
        T.MelSpectrogram(
            features.sample_rate,
            n_fft=features.n_fft,
            hop_length=features.hop_length,
            n_mels=features.n_mels,
            pad_mode="constant",
            norm="slaney",
            mel_scale="slaney",
        ),
        T.AmplitudeToDB("power", top_db=features.top_db),
    )
    spec = logmel_numpy(load_audio(paths[0], features.sample_rate), logmel)  # first-call costs
    logmel_numpy(load_audio(paths[0], features.sample_rate), plain)
    n = repeats * len(paths)
    decode = compute = libsndfile = write = baseline = 0.0
    store = FeatureStore(tempfile.mkdtemp(prefix="mgc-bench-store-"), features)
    try:
        for _ in range(repeats):
            for p in paths:
                t0 = time.perf_counter()
                sf.read(p, dtype="float32")
                t1 = time.perf_counter()
                wave = load_audio(p, features.sample_rate)
                t2 = time.perf_counter()
                logmel_numpy(wave, logmel)
                t3 = time.perf_counter()
                store.save(content_hash(Path(p).read_bytes()), spec)
                t4 = time.perf_counter()
                logmel_numpy(wave, plain)
                t5 = time.perf_counter()
                libsndfile, decode = libsndfile + t1 - t0, decode + t2 - t1
                compute, write, baseline = compute + t3 - t2, write + t4 - t3, baseline + t5 - t4
    finally:
        shutil.rmtree(store.uri, ignore_errors=True)
    ms = 1000 / n
    return {
        "decode_libsndfile_ms": libsndfile * ms,
        "decode_ms": decode * ms,
        "logmel_ms": compute * ms,
        "logmel_torchaudio_ms": baseline * ms,
        "hash_write_ms": write * ms,
    }


def stage_costs_fresh(paths: list[str], keep: bool) -> dict[str, float]:
    """stage_costs in a new Python process."""
    mode = "keep" if keep else "default"
    out = subprocess.run(
        [sys.executable, __file__, "--stage-costs", mode, "--data", "-", *paths],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def cpu_seconds_by_process() -> dict[int, tuple[str, float]]:
    """pid → (name, user + system CPU seconds) of every process, from /proc; {} off Linux."""
    out: dict[int, tuple[str, float]] = {}
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        return out
    tick = os.sysconf("SC_CLK_TCK")
    for d in proc.iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        name = cmd.split()[0] if cmd.strip() else stat.split("(", 1)[1].split(")")[0]
        out[int(d.name)] = (name, (int(fields[11]) + int(fields[12])) / tick)
    return out


def cpu_use_by_role(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
) -> dict[str, float]:
    """CPU seconds spent between two snapshots, by role: this process (the driver), Ray's
    worker processes (named ray::…, the map tasks and Ray Data's helper actors) and the rest
    (raylet, GCS, dashboard, the OS), largest first."""
    roles: dict[str, float] = {}
    for pid, (name, sec) in after.items():
        spent = sec - before.get(pid, (name, 0.0))[1]
        if spent <= 0:
            continue
        if pid == os.getpid():
            role = "driver"
        elif name in ("ray::IDLE",) or name.startswith("ray::MapBatches"):
            role = "workers (map tasks)"
        elif name.startswith("ray::"):
            role = name
        else:
            role = Path(name).name
            role = "python (dashboard, log monitor)" if role.startswith("python") else role
        roles[role] = roles.get(role, 0.0) + spent
    big = {k: v for k, v in sorted(roles.items(), key=lambda kv: -kv[1]) if v >= 0.05}
    big["everything else"] = sum(roles.values()) - sum(big.values())
    return big


def warm_workers(n: int, rounds: int = 5) -> float:
    """Bring Ray to the state a long-lived cluster is in: each of the n workers has run a Ray Data
    map task that imported mgc.data.prepare (torch, Ray Data's worker-side modules, pyarrow), and Ray
    Data's own helper actors (started by a process's first dataset) are running.

    A worker's first Ray Data task costs about 0.7 s more than the next ones here; if only one
    worker were warmed, the other would pay that inside the timed run. Tasks sleep a little so
    that each lands on its own worker; rounds repeat until n distinct workers have run one."""
    import ray

    def _load(batch: dict) -> dict:
        import os

        import mgc.data.prepare  # noqa: F401

        time.sleep(0.3)
        return {"pid": [os.getpid()] * len(batch["item"])}

    t0 = time.perf_counter()
    seen: set[int] = set()
    for _ in range(rounds):
        ds = ray.data.from_items(list(range(n)), override_num_blocks=n)
        rows = ds.map_batches(_load, batch_size=1, num_cpus=1).take_all()
        seen |= {int(r["pid"]) for r in rows}
        if len(seen) >= n:
            break
    return time.perf_counter() - t0


if __name__ == "__main__":
    raise SystemExit(main())
