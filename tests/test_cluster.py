"""cluster.yaml: checked with the Ray cluster launcher's own validation, offline.

`ray up` does `prepare_config` (merge with ray/autoscaler/aws/defaults.yaml, per-type worker
bounds) and then `validate_config` (ray/autoscaler/ray-schema.json plus its own consistency
checks) before it talks to AWS; both run here exactly as `ray up` runs them. Nothing here
imports boto3 or contacts AWS. The rest pins down what mgc needs from the cluster.
"""

from __future__ import annotations

import copy
import re
import shlex
import subprocess
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.docker import docker_start_cmds
from ray.autoscaler._private.util import prepare_config, validate_config

from mgc.core.config import load_config

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"
DOCS = ROOT / "docs" / "cluster.md"
SHARED = "/mnt/shared"
ENV = {
    "MGC_DATA_ROOT": f"{SHARED}/gtzan",
    "MGC_CACHE_DIR": f"{SHARED}/mgc-cache",
    "MGC_RAY_RESULTS": f"{SHARED}/ray_results",
}
# EC2 families whose every size carries NVIDIA GPUs.
GPU_FAMILIES = ("g4dn", "g5", "g6", "g6e", "p3", "p4d", "p4de", "p5")


@pytest.fixture(scope="module")
def raw() -> dict:
    # `ray up` reads the file with yaml.safe_load as well.
    return yaml.safe_load(CLUSTER_YAML.read_text())


@pytest.fixture(scope="module")
def prepared(raw: dict) -> dict:
    cfg = prepare_config(copy.deepcopy(raw))
    validate_config(cfg)
    return cfg


def _gpu_types(cfg: dict) -> dict[str, dict]:
    head = cfg["head_node_type"]
    return {k: v for k, v in cfg["available_node_types"].items() if k != head}


def _docker_env(cfg: dict) -> dict[str, str]:
    env = {}
    for opt in cfg["docker"].get("run_options", []):
        words = shlex.split(opt)
        for flag, value in zip(words, words[1:], strict=False):
            if flag in ("-e", "--env") and "=" in value:
                name, _, val = value.partition("=")
                env[name] = val
    return env


def test_ray_accepts_the_config(raw: dict, prepared: dict):
    assert prepared["cluster_name"] == "mgc"
    assert prepared["provider"]["type"] == "aws"
    assert prepared["provider"]["region"] == "us-west-2"
    assert raw["head_node_type"] in raw["available_node_types"]


def test_the_validation_is_not_a_rubber_stamp(raw: dict):
    bad = copy.deepcopy(raw)
    bad["setup_comands"] = ["typo"]  # unknown top-level key
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(bad))
    bad = copy.deepcopy(raw)
    next(iter(_gpu_types(bad).values()))["resources"]["GPU"] = 0.5  # must be an integer
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(bad))


def test_head_is_cpu_only_and_never_scaled(prepared: dict):
    head = prepared["available_node_types"][prepared["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    assert not head["node_config"]["InstanceType"].startswith(GPU_FAMILIES)
    assert (head["min_workers"], head["max_workers"]) == (0, 0)


def test_gpu_workers_declare_gpus_and_sane_bounds(prepared: dict):
    workers = _gpu_types(prepared)
    assert workers, "no worker node type"
    total_min = 0
    for name, spec in workers.items():
        family = spec["node_config"]["InstanceType"].split(".")[0]
        assert family in GPU_FAMILIES, f"{name}: {family} is not a GPU instance family"
        assert spec["resources"].get("GPU", 0) >= 1, f"{name}: declares no GPU"
        assert spec["resources"].get("CPU", 0) >= 1
        # Scale from zero: no GPU is paid for while nothing runs.
        assert spec["min_workers"] == 0
        assert 1 <= spec["max_workers"] <= prepared["max_workers"]
        total_min += spec["min_workers"]
    assert total_min <= prepared["max_workers"]
    assert 0 < prepared["idle_timeout_minutes"] <= 60


def test_same_image_ray_and_python_as_this_repo(prepared: dict):
    image = prepared["docker"]["image"]
    repo, _, tag = image.partition(":")
    assert repo in ("rayproject/ray", "rayproject/ray-ml")
    assert tag.startswith(f"{ray.__version__}-"), f"{image} is not Ray {ray.__version__}"
    assert tag.endswith("-gpu") or "-cu" in tag
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f"ray[tune,data,default]=={ray.__version__}" in pyproject


def test_repo_is_copied_and_installed(prepared: dict):
    assert prepared["file_mounts"].get("~/mgc") == "."
    assert ".gitignore" in prepared["rsync_filter"]  # keeps .venv/ and data out of the copy
    # merge_setup_commands has put setup_commands in front of both node kinds' lists.
    for key in ("head_setup_commands", "worker_setup_commands"):
        installs = [c for c in prepared[key] if re.search(r"pip install .*-e ~/mgc\b", c)]
        assert installs, f"{key} does not install ~/mgc"
        # The same interpreter as `ray start`: the image's python, not some other pip.
        assert all(c.startswith("python -m pip") for c in installs)


def test_head_starts_ray_with_dashboard_and_autoscaler(prepared: dict):
    cmds = prepared["head_start_ray_commands"]
    assert cmds[0].strip() == "ray stop"
    start = " ".join(cmds[1:])
    for flag in (
        "ray start --head",
        "--port=6379",
        "--dashboard-host=0.0.0.0",
        "--autoscaling-config=~/ray_bootstrap_config.yaml",
    ):
        assert flag in start
    workers = prepared["worker_start_ray_commands"]
    assert workers[0].strip() == "ray stop"
    assert "ray start --address=$RAY_HEAD_IP:6379" in " ".join(workers[1:])


def test_every_command_is_valid_bash(prepared: dict):
    keys = (
        "initialization_commands",
        "head_setup_commands",
        "worker_setup_commands",
        "head_start_ray_commands",
        "worker_start_ray_commands",
    )
    for key in keys:
        for cmd in prepared[key]:
            out = subprocess.run(["bash", "-n", "-c", cmd], capture_output=True, text=True)
            assert out.returncode == 0, f"{key}: {cmd!r}: {out.stderr}"


def test_shared_storage_is_mounted_and_exported(prepared: dict):
    init = "\n".join(prepared["initialization_commands"])
    region = prepared["provider"]["region"]
    assert re.search(
        rf"mount -t nfs4 .*fs-\w+\.efs\.{region}\.amazonaws\.com:/ {SHARED}\b", init
    ), "no EFS mount at /mnt/shared in initialization_commands"
    assert f"mountpoint -q {SHARED}" in init  # re-running `ray up` does not mount twice
    # Token authentication stays on for the cluster's dashboard and job API.
    assert _docker_env(prepared) == {**ENV, "RAY_AUTH_MODE": "token"}
    # The docker run command Ray itself builds for a worker: mounts, env and GPUs.
    docker = prepared["docker"]
    run = docker_start_cmds(
        "ubuntu",
        docker["image"],
        prepared["file_mounts"],
        docker["container_name"],
        docker["run_options"] + docker.get("worker_run_options", []),
        prepared["cluster_name"],
        "/home/ray",
        "docker",
    )
    assert f"-v {SHARED}:{SHARED}" in run
    assert ":/home/ray/mgc " in run
    assert "--gpus all" in run
    for name, value in ENV.items():
        assert f"-e {name}={value}" in run


def test_mgc_picks_the_shared_paths_up(prepared: dict, monkeypatch: pytest.MonkeyPatch):
    for name, value in _docker_env(prepared).items():
        monkeypatch.setenv(name, value)
    cfg = load_config()
    assert cfg.data.root == ENV["MGC_DATA_ROOT"]
    assert cfg.cache.dir == ENV["MGC_CACHE_DIR"]
    assert cfg.sweep.storage_path == ENV["MGC_RAY_RESULTS"]


def test_overrides_in_the_docs_are_real_config_keys():
    if not DOCS.is_file():
        pytest.skip("docs/cluster.md is not in this checkout")
    overrides = sorted(set(re.findall(r"\b(sweep\.[\w.]+=[^\s'\"`\\]+)", DOCS.read_text())))
    assert overrides, "docs/cluster.md shows no sweep overrides"
    for text in overrides:
        load_config(ROOT / "ablations" / "e2.yaml", [text])  # ConfigError on a wrong key


# ---------------------------------------------------------------------------------------------
# cluster-local.yaml: the same path on a lab's own machines (Ray's local node provider)

LOCAL_YAML = ROOT / "cluster-local.yaml"


@pytest.fixture(scope="module")
def local_raw() -> dict:
    return yaml.safe_load(LOCAL_YAML.read_text())


def test_local_provider_config_is_accepted_by_ray(local_raw: dict):
    cfg = copy.deepcopy(local_raw)
    cfg["provider"].update(head_ip="10.0.0.10", worker_ips=["10.0.0.11", "10.0.0.12"])
    prepared = prepare_config(cfg)
    validate_config(prepared)
    assert prepared["provider"]["type"] == "local"
    # One node type for the listed machines; all of them started, none created.
    (node_type,) = prepared["available_node_types"].values()
    assert node_type["min_workers"] == node_type["max_workers"] == prepared["max_workers"] == 2
    placeholders = re.findall(r"REPLACE\S*", LOCAL_YAML.read_text())
    assert placeholders, "the machines' addresses and the SSH user are for the lab to fill in"


def test_local_nodes_install_this_repo_and_start_ray_on_shared_storage(local_raw: dict):
    assert local_raw["file_mounts"]["~/mgc"] == "."
    assert ".gitignore" in local_raw["rsync_filter"]
    setup = "\n".join(local_raw["setup_commands"])
    assert "bash setup.sh" in setup and f"test -d {SHARED}" in setup
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        cmds = local_raw[key]
        start = " ".join(cmds[1:])
        # Ray from the repo's own .venv (the pinned version), mgc's paths on the shared folder,
        # token authentication on.
        assert "~/mgc/.venv/bin/ray start" in start
        for name, value in {**ENV, "RAY_AUTH_MODE": "token"}.items():
            assert f"{name}={value}" in start, f"{key}: {name}"
        for cmd in cmds:
            out = subprocess.run(["bash", "-n", "-c", cmd], capture_output=True, text=True)
            assert out.returncode == 0, f"{key}: {cmd!r}: {out.stderr}"
    # The dashboard stays on the head's loopback (reached through `ray dashboard`).
    assert "--dashboard-host=127.0.0.1" in " ".join(local_raw["head_start_ray_commands"])
