"""The cluster path, run for real: a head and two worker nodes on this machine (`raynodes`), each
its own `ray start` (raylet, object store, workers) on 127.0.0.1, the worker nodes declaring one
logical GPU each, and `python -m mgc.sweep ... sweep.ray_address=HEAD` joining them as a lab or
cloud cluster would be joined. The dataset, feature cache, Tune storage and results are in tmp
folders that every node sees (the cluster's shared storage).

What is checked: Ray's resource accounting places trials by their GPU share (two trials per
logical GPU) on both worker nodes, and the row records the node of every trial and final seed;
a trial with no CUDA behind its GPU says so in one line and trains on the CPU; a data-parallel
trial spans two nodes; a worker node killed (kill -9 of its raylet and workers) during a trial
or a final seed costs at most the epoch it was in; the README's `ray job submit` with the
cluster's token; the feature cache and the Tune state in object storage (an S3 server on the
loopback), the latter through a SIGTERM and a --resume.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from browser import free_port
from conftest import write_synth_dataset
from raynodes import RAY, RayNodes, listens
from test_sweep_crash import log_epochs

REPO = Path(__file__).resolve().parents[1]
NO_CUDA = "torch sees no CUDA device there: it trains on the CPU"
RETRY = "failed on node"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, str]]:
    """An S3 server on the loopback (moto), with a bucket `mgc-test`: the environment that
    points boto and s3fs at it, given to every node of the cluster ({} without moto[server] and
    s3fs, the dev extra's)."""
    server = Path(sys.executable).with_name("moto_server")
    if importlib.util.find_spec("s3fs") is None or not server.is_file():
        yield {}  # the S3 test skips, saying why; the others need no S3
        return
    port = free_port()
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }
    proc = subprocess.Popen(
        [str(server), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc)
        import s3fs

        s3fs.S3FileSystem(
            endpoint_url=env["AWS_ENDPOINT_URL"], key="testing", secret="testing"
        ).mkdir("mgc-test")
        yield env
    finally:
        proc.kill()
        proc.wait()


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    if not listens(port, proc, timeout):
        raise RuntimeError(f"moto_server did not listen on port {port}")


@pytest.fixture(scope="module")
def nodes(tmp_path_factory, s3: dict[str, str]) -> Iterator[RayNodes]:
    """Head (1 CPU: Ray Data and a data-parallel trial's coordinator may use it, trials and
    seeds, which ask for a GPU share, never) and two workers of 2 CPUs and 1 logical GPU; every
    node reaches the S3 server."""
    cluster = RayNodes(tmp_path_factory.mktemp("nodes"), head_cpus=1, dashboard=True)
    try:
        cluster.start(extra_env=s3)
        cluster.add_worker(cpus=2, gpus=1)
        cluster.add_worker(cpus=2, gpus=1)
        cluster.wait()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Path:
    """The storage every node sees: the dataset (ds/) and the feature cache (cache/), made once
    for the module (the first sweep computes the features through Ray Data, the others find
    them); each test keeps its Tune state and results in its own tmp folder."""
    root = tmp_path_factory.mktemp("shared")
    write_synth_dataset(root / "ds")
    return root


def sweep_args(nodes: RayNodes, shared: Path, tmp: Path, *extra: str) -> list[str]:
    """A tiny E0 row (a narrow cnn4 on 1 s windows of a dozen synthetic clips) on the cluster."""
    return [
        str(REPO / "ablations" / "e0.yaml"),
        f"sweep.ray_address={nodes.address}",
        f"data.root={shared / 'ds'}",
        f"cache.dir={shared / 'cache'}",
        "chunks.window_s=1.0",
        "model.width=8",
        "train.amp=off",
        "train.epochs=2",
        "sweep.grace_period=2",  # ASHA stops nothing: every trial runs every epoch
        "sweep.final.epochs=2",
        "sweep.final.windows_per_track=2",
        "sweep.final.early_stopping_patience=0",
        "sweep.final_seeds=[0, 1]",
        "sweep.resources.cpus_per_trial=1",
        "sweep.resources.gpus_per_trial=0.5",
        f"sweep.results_dir={tmp / 'results'}",
        f"sweep.storage_path={tmp / 'ray_results'}",
        "--no-wandb",
        *extra,
    ]


def start_sweep(
    nodes: RayNodes, args: list[str], tmp: Path, env: dict[str, str] | None = None
) -> subprocess.Popen:
    """`python -m mgc.sweep` as a driver of the cluster (its token and loopback settings, and
    `env`), its output to tmp/sweep.log."""
    env = {k: v for k, v in {**nodes.env, **(env or {})}.items() if not k.startswith("WANDB")}
    with open(tmp / "sweep.log", "w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "mgc.sweep", *args],
            cwd=tmp,
            env={**env, "TQDM_DISABLE": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_for(what: str, ready: Callable[[], object], proc: subprocess.Popen, tmp: Path) -> object:
    """ready()'s first true value, polled while the sweep runs; the sweep's log on failure."""
    deadline = time.monotonic() + 600
    while not (value := ready()):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no {what}; sweep log:\n{(tmp / 'sweep.log').read_text()[-4000:]}")
        time.sleep(0.2)
    return value


def finish(proc: subprocess.Popen, tmp: Path) -> tuple[dict, str]:
    """The sweep's summary.json and its log, once it has ended well."""
    text = ended(proc, tmp, 0)
    return json.loads((tmp / "results" / "E0" / "summary.json").read_text()), text


def ended(proc: subprocess.Popen, tmp: Path, status: int) -> str:
    """The sweep's log, once it has ended with `status` (130: stopped, saying how to go on)."""
    try:
        proc.wait(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = (tmp / "sweep.log").read_text()
    assert proc.returncode == status, text[-4000:]
    return text


def reports(tmp: Path) -> dict[str, list[dict]]:
    """Every trial's reports so far (Tune's result.json), by trial folder."""
    out = {}
    for d in sorted((tmp / "ray_results" / "mgc-E0").glob("_*trial_*")):
        path = d / "result.json"
        text = path.read_text() if path.is_file() else ""  # its last line may be half-written
        out[d.name] = [row for line in text.splitlines() if (row := json_line(line))]
    return out


def json_line(line: str) -> dict | None:
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return None


def test_trials_share_logical_gpus_across_worker_nodes(
    nodes: RayNodes, shared: Path, tmp_path: Path
):
    args = sweep_args(nodes, shared, tmp_path, "sweep.num_samples=3")
    summary, log = finish(start_sweep(nodes, args, tmp_path), tmp_path)
    workers = {n.node_id for n in nodes.workers()}
    trials = summary["trials"]
    assert len(trials) == 3 and all(t["epochs"] == 2 and "error" not in t for t in trials)
    # Ray placed them by their GPU share: only on the GPU nodes, on both, one GPU each.
    assert {t["node_id"] for t in trials} == workers
    assert all(t["gpu_ids"] == "0" for t in trials)
    # Two trials at once on one logical GPU: their reports overlap in time on one node.
    spans = {}
    for name, rows in reports(tmp_path).items():
        first = rows[0]["timestamp"] - rows[0]["time_this_iter_s"]
        spans[name] = (rows[0]["node_id"], first, rows[-1]["timestamp"])
    shared = [
        (a, b)
        for a in spans
        for b in spans
        if a < b and spans[a][0] == spans[b][0] and spans[a][1] < spans[b][2]
        and spans[b][1] < spans[a][2]
    ]  # fmt: skip
    assert shared, spans
    # The seeds too: each recorded with its node, a worker node.
    assert summary["seeds"] == [0, 1] and set(summary["seed_nodes"]) <= workers
    assert all(summary["seed_nodes"])
    # No CUDA behind the logical GPUs: one line per worker process, no failure.
    lines = [line for line in log.splitlines() if NO_CUDA in line]
    assert lines and all(line.count(NO_CUDA) == 1 for line in lines)
    assert 'File "' + str(REPO / "mgc") not in log  # no traceback through mgc anywhere
    for seed in (0, 1):
        assert log_epochs(tmp_path / "results" / "E0" / f"seed_{seed}" / "train_log.csv") == [1, 2]


def test_a_data_parallel_trial_spans_two_nodes(nodes: RayNodes, shared: Path, tmp_path: Path):
    """workers_per_trial=2 with 1.5 CPUs a worker: a worker node (2 CPUs) holds one of them and
    the head (1 CPU) none, so the trial trains over two nodes (gloo over the loopback). The same
    trial with one worker, same seed and configuration, is the comparison."""
    runs = {}
    for workers in (1, 2):
        tmp = tmp_path / f"workers{workers}"
        tmp.mkdir()
        args = sweep_args(
            nodes, shared, tmp,
            "sweep.num_samples=1",
            "sweep.final_seeds=[0]",
            "sweep.final.epochs=1",
            "sweep.resources.cpus_per_trial=1.5",
            "sweep.resources.gpus_per_trial=0",
            f"sweep.resources.workers_per_trial={workers}",
        )  # fmt: skip
        summary, _ = finish(start_sweep(nodes, args, tmp), tmp)
        (trial,) = summary["trials"]
        (trial_dir,) = (tmp / "ray_results" / "mgc-E0").glob("_*trial_*")
        runs[workers] = (trial, log_rows(trial_dir / "run" / "train_log.csv"))
    (one, one_log), (two, two_log) = runs[1], runs[2]
    spread = two["worker_nodes"].split(",")
    assert len(spread) == 2 and len(set(spread)) == 2
    assert set(spread) <= {n.node_id for n in nodes.workers()}
    # The same configuration (Optuna seeded alike), trained and reported by both.
    assert {k: v for k, v in one.items() if k.startswith(("train.", "model."))} == {
        k: v for k, v in two.items() if k.startswith(("train.", "model."))
    }
    assert one["epochs"] == two["epochs"] == 2
    assert [r["epoch"] for r in one_log] == [r["epoch"] for r in two_log] == ["1", "2"]
    print(f"one worker: {one_log}\ntwo workers on two nodes: {two_log}")


def log_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_a_node_lost_mid_trial_costs_at_most_its_epoch(
    nodes: RayNodes, shared: Path, tmp_path: Path
):
    """A worker node killed while a trial trains on it: the trial is retried on the surviving
    node from its last checkpoint (sweep.max_failures), the log says so in one line, no epoch
    is lost and at most the one in flight on the lost node runs twice, and the seeds and the
    table follow. A replacement node joins afterwards for the tests after."""
    epochs = 30  # of a fraction of a second each: the kill lands mid-trial
    args = sweep_args(
        nodes, shared, tmp_path,
        "sweep.num_samples=2",
        f"train.epochs={epochs}",
        f"sweep.grace_period={epochs}",
        "sweep.max_failures=2",
    )  # fmt: skip
    proc = start_sweep(nodes, args, tmp_path)

    def a_trial_mid_way() -> tuple[str, str] | None:
        for name, rows in reports(tmp_path).items():
            if rows and 2 <= rows[-1]["training_iteration"] < epochs // 2:
                return name, rows[-1]["node_id"]
        return None

    picked, where = wait_for("a trial after its first epoch", a_trial_mid_way, proc, tmp_path)
    victim = nodes.by_id(str(where))
    before = reports(tmp_path)
    victim.kill()
    try:
        summary, log = finish(proc, tmp_path)
    finally:
        nodes.add_worker(cpus=2, gpus=1)  # two worker nodes again for the tests after
        nodes.wait()
    trials = summary["trials"]
    assert len(trials) == 2 and all(t["epochs"] == epochs and "error" not in t for t in trials)
    after = reports(tmp_path)
    for name, rows in after.items():
        # Every epoch reported, none lost. An epoch may run twice where the node died between
        # its report and Tune's taking of its checkpoint: at most one, on a trial that ran there.
        its = [r["training_iteration"] for r in rows]
        assert sorted(set(its)) == list(range(1, epochs + 1)), (name, its)
        ran_there = any(r["node_id"] == victim.node_id for r in rows)
        assert len(its) - epochs <= (1 if ran_there else 0), (name, its)
    # The picked trial was mid-way on the victim: it finished on a node that survived. Another
    # trial on the victim may have finished its last epoch there before the kill landed; one
    # that did not moved too, and every move is one retry line.
    assert after[picked][-1]["node_id"] != victim.node_id
    on_victim = [n for n, rows in before.items() if rows and rows[-1]["node_id"] == victim.node_id]
    lost = {n for n in on_victim if after[n][-1]["node_id"] != victim.node_id}
    assert picked in lost
    for name in set(on_victim) - lost:
        assert all(r["node_id"] == victim.node_id for r in after[name]), name
    retries = [line for line in log.splitlines() if RETRY in line]
    assert len(retries) == len(lost), retries
    assert all(f"on node {victim.node_id[:8]}" in r and "retry 1 of 2" in r for r in retries)
    assert all("checkpoint" in r for r in retries)
    print("\n".join(retries))
    assert all(summary["seed_nodes"]) and victim.node_id not in summary["seed_nodes"]


def test_a_node_lost_during_the_final_seeds(nodes: RayNodes, shared: Path, tmp_path: Path):
    """A worker node killed while the final seeds train (no search: straight to them): Ray runs
    the lost seed again elsewhere (its task's retries), it continues from its checkpoint in the
    shared results folder and says so in one line; every seed logs each epoch once."""
    epochs = 60  # over every window: the kill lands while the seeds train
    args = sweep_args(
        nodes, shared, tmp_path,
        "sweep.search_space=null",  # straight to the final seeds
        f"sweep.final.epochs={epochs}",
        "sweep.final.windows_per_track=0",
        "sweep.max_failures=2",
    )  # fmt: skip
    proc = start_sweep(nodes, args, tmp_path)
    row = tmp_path / "results" / "E0"

    def done(seed: int) -> list[int]:
        path = row / f"seed_{seed}" / "train_log.csv"
        return log_epochs(path) if path.is_file() else []

    def a_seed_mid_way() -> str:
        return next((f"seed_{s}" for s in (0, 1) if 2 <= len(done(s)) < epochs // 3), "")

    task = str(wait_for("a seed past its second epoch", a_seed_mid_way, proc, tmp_path))
    # The seed's task is named by its seed: Ray's state API says where it runs.
    where = wait_for("its node", lambda: nodes.running_on(task), proc, tmp_path)
    victim = nodes.by_id(where[0])
    victim.kill()
    try:
        summary, log = finish(proc, tmp_path)
    finally:
        nodes.add_worker(cpus=2, gpus=1)
        nodes.wait()
    assert summary["n_trials"] == 0 and summary["seeds"] == [0, 1]
    retried = [line for line in log.splitlines() if "retried on node" in line]
    lost = task.replace("_", " ")
    assert any(f"{lost}: its run stopped after epoch" in line for line in retried), retried
    print("\n".join(retried))
    for seed in (0, 1):
        # Each epoch once in the seed's log, and tested once.
        assert done(seed) == list(range(1, epochs + 1))
        assert (row / f"seed_{seed}" / "metrics.json").is_file()
    assert victim.node_id not in summary["seed_nodes"]
    assert not list(row.glob("seed_*.old-*"))


def job(nodes: RayNodes, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """`ray job ARGS --address DASHBOARD` as the README has it, from the repo root."""
    return subprocess.run(
        [RAY, "job", args[0], "--address", nodes.dashboard_url, *args[1:]],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_the_readme_job_submit_path(nodes: RayNodes, shared: Path, tmp_path: Path):
    """README/docs: `ray job submit --working-dir . --no-wait -- python -m mgc.sweep ...
    sweep.ray_address=auto sweep.results_dir=SHARED/results`, with the token sent by the CLI
    (RAY_AUTH_MODE=token and the token in ~/.ray/auth_token), then `ray job logs --follow`."""
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    shutil.copy(nodes.env["RAY_AUTH_TOKEN_PATH"], home / ".ray" / "auth_token")
    user = {k: v for k, v in nodes.env.items() if not k.startswith(("RAY_AUTH", "WANDB"))}
    user["HOME"] = str(home)
    args = sweep_args(nodes, shared, tmp_path, "sweep.num_samples=2", "sweep.final_seeds=[0]")
    args[:2] = ["ablations/e0.yaml", "sweep.ray_address=auto"]  # the README's words
    command = ["--working-dir", ".", "--no-wait", "--", "python", "-m", "mgc.sweep", *args]
    # Without RAY_AUTH_MODE=token the CLI sends no token, and the cluster says no.
    refused = job(nodes, user, "submit", *command)
    assert refused.returncode != 0
    assert "auth" in (refused.stdout + refused.stderr).lower()
    # With it, as the README says.
    user["RAY_AUTH_MODE"] = "token"
    submitted = job(nodes, user, "submit", *command)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    (job_id,) = set(re.findall(r"raysubmit_\w+", submitted.stdout + submitted.stderr))
    logs = job(nodes, user, "logs", "--follow", job_id)
    assert logs.returncode == 0, logs.stderr
    assert "results:" in logs.stdout, logs.stdout[-4000:]
    listed = job(nodes, user, "list")
    assert job_id in listed.stdout and "SUCCEEDED" in listed.stdout.split(job_id, 1)[1][:2000]
    # The row is on the shared storage, where `ray rsync-down` fetches it from.
    summary = json.loads((tmp_path / "results" / "E0" / "summary.json").read_text())
    assert summary["n_trials"] == 2 and summary["seed_nodes"][0]
    assert (tmp_path / "results" / "table.md").is_file()


def test_the_feature_cache_on_object_storage(
    nodes: RayNodes, shared: Path, s3: dict[str, str], tmp_path: Path
):
    """MGC_CACHE_DIR=s3://… (the README's object-store cache) on the S3 server: the sweep's
    prepare writes every log-mel there through Ray Data tasks on the cluster, and the trials and
    the seed on the worker nodes read them from there; no cache on any local disk."""
    if not s3:
        pytest.skip("moto[server] and s3fs (pip install -e '.[dev]') are needed for this test")
    import s3fs

    args = [a for a in sweep_args(nodes, shared, tmp_path) if not a.startswith("cache.dir=")]
    args += ["sweep.num_samples=2", "sweep.final_seeds=[0]", "sweep.final.epochs=1"]
    env = {"MGC_CACHE_DIR": "s3://mgc-test/mgc-cache"}
    summary, log = finish(start_sweep(nodes, args, tmp_path, env), tmp_path)
    assert "features: 12 computed, 0 cached" in log
    store = s3fs.S3FileSystem(endpoint_url=s3["AWS_ENDPOINT_URL"], key="testing", secret="testing")
    assert len([p for p in store.find("mgc-test/mgc-cache") if p.endswith(".npy")]) >= 12
    workers = {n.node_id for n in nodes.workers()}
    assert {t["node_id"] for t in summary["trials"]} <= workers and summary["seed_nodes"][
        0
    ] in workers
    assert all(t["epochs"] == 2 and "error" not in t for t in summary["trials"])
    assert not list(tmp_path.rglob("manifest*")) and not (tmp_path / "cache").exists()


def test_tune_storage_on_object_storage(
    nodes: RayNodes, shared: Path, s3: dict[str, str], tmp_path: Path
):
    """sweep.storage_path=s3://… on the S3 server, its endpoint in the URI (`?endpoint_override=`,
    which every node's pyarrow reads): Tune's experiment state, the trials' results and
    checkpoints go to the bucket while each trial works in a folder on its own node. A SIGTERM
    mid-search, then --resume, restores the search from the bucket: the same trials, each log
    whole (it came back with the checkpoint, wherever the trial went on). Afterwards the bucket
    holds the experiment and every trial's logs, and no checkpoint; no local Tune folder."""
    if not s3:
        pytest.skip("moto[server] and s3fs (pip install -e '.[dev]') are needed for this test")
    from pyarrow import fs as pafs

    epochs = 6  # a few seconds each: the SIGTERM lands mid-search
    endpoint = s3["AWS_ENDPOINT_URL"]
    store = f"s3://mgc-test/ray_results?endpoint_override={endpoint}"
    args = [a for a in sweep_args(nodes, shared, tmp_path) if "storage_path" not in a]
    args += [
        f"sweep.storage_path={store}",
        "sweep.num_samples=3",
        f"train.epochs={epochs}",
        f"sweep.grace_period={epochs}",
        "sweep.final_seeds=[0]",
        "sweep.final.epochs=1",
    ]
    bucket = pafs.S3FileSystem(
        endpoint_override=endpoint, access_key="testing", secret_key="testing"
    )
    exp = "mgc-test/ray_results/mgc-E0"

    def stored() -> list[str]:
        found = bucket.get_file_info(pafs.FileSelector(exp, recursive=True, allow_not_found=True))
        return sorted(f.path[len(exp) + 1 :] for f in found if f.type == pafs.FileType.File)

    def a_checkpoint() -> bool:
        return any("/checkpoint_" in p for p in stored())

    proc = start_sweep(nodes, args, tmp_path)
    wait_for("a trial checkpoint in the bucket", a_checkpoint, proc, tmp_path)
    proc.send_signal(signal.SIGTERM)
    assert "continue with" in ended(proc, tmp_path, 130)  # the CLI's way on, with --resume
    # The trials that had reached the bucket (a trial only just started may not have yet).
    begun = {p.split("/")[0] for p in stored() if p.startswith("_")}
    assert begun and any(p.startswith("experiment_state") for p in stored())

    summary, log = finish(start_sweep(nodes, [*args, "--resume"], tmp_path), tmp_path)
    assert f"resuming s3://mgc-test/ray_results/mgc-E0?endpoint_override={endpoint}" in log
    trials = {t["trial"] for t in summary["trials"]}
    assert len(trials) == 3 and begun <= trials  # the same search, not a new one
    assert all(t["epochs"] == epochs and "error" not in t for t in summary["trials"])
    assert summary["seed_nodes"][0]
    files = stored()
    assert "tuner.pkl" in files and any(p.startswith("experiment_state") for p in files)
    assert not [p for p in files if "checkpoint_" in p or "/run/checkpoints/" in p]  # pruned
    nodes_seen = set()
    for trial in trials:
        assert f"{trial}/result.json" in files and f"{trial}/run/train_log.csv" in files
        logged = csv.DictReader(io.StringIO(read_text(bucket, f"{exp}/{trial}/run/train_log.csv")))
        assert [int(r["epoch"]) for r in logged] == list(range(1, epochs + 1)), trial
        lines = read_text(bucket, f"{exp}/{trial}/result.json").splitlines()
        rows = [r for line in lines if (r := json_line(line))]
        nodes_seen |= {r["node_id"] for r in rows}
        # Every report's epoch is Tune's count: a trial stopped mid-way went on from its
        # checkpoint in the bucket, not from its first epoch.
        assert all(r["epoch"] == r["training_iteration"] for r in rows), trial
        assert rows[-1]["epoch"] == epochs
    # Trials on both worker nodes, each in a folder of its own node: nothing of Tune's on the
    # driver's disk but Ray's own temporary folders.
    assert nodes_seen == {n.node_id for n in nodes.workers()}
    assert not (tmp_path / "ray_results").exists() and not (tmp_path / "s3:").exists()
    print(f"{len(files)} objects in the bucket after the sweep:", *files, sep="\n  ")


def read_text(fs, path: str) -> str:
    with fs.open_input_stream(path) as src:
        return src.read().decode()
