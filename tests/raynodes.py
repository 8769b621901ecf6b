"""A real multi-node Ray cluster on this machine, for the cluster tests: a head and worker nodes,
each its own `ray start --block` process group (its own raylet, object store and workers), all on
127.0.0.1, with their own temporary folder, ports and token.

Nothing here touches another Ray on the machine: no `ray stop` (it would end every Ray here), no
`/tmp/ray` (the cluster's temporary folder and its `ray_current_cluster` file are its own, so a
plain `ray.init()` elsewhere never joins it), and a node is stopped by killing its own process
group only.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

# Ray swaps the loopback for the machine's own address unless told it is a one-machine Ray
# (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, set for every process of the cluster); a worker node of
# such a Ray is then refused by `ray start`, so worker nodes start through this, which lets them
# join and keeps them on 127.0.0.1 too.
WORKER_START = (
    "import sys, ray._private.ray_constants as c, ray._private.services as s; "
    "c.ENABLE_RAY_CLUSTER = True; s.get_node_ip_address = lambda address=None: '127.0.0.1'; "
    "from ray.scripts.scripts import main; sys.argv[0] = 'ray'; main()"
)
RAY = str(Path(sys.executable).with_name("ray"))
LOOPBACK = "127.0.0.1"
MARK = "mgc_test_node_"  # each node's own custom resource: mgc_test_node_<name>


def listens(port: int, proc: subprocess.Popen, timeout: float) -> bool:
    """Whether `proc` listens on 127.0.0.1:`port` within `timeout` s (False once it exits)."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.2)
    return False


def free_port() -> int:
    """A TCP port nobody listens on at this moment, on the loopback."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


# {node name: node id} of the live nodes of the cluster at argv[1], one JSON line.
LIST_NODES = f"""
import json, sys, ray
ray.init(address=sys.argv[1], log_to_driver=False)
names = {{k[len("{MARK}"):]: n["NodeID"] for n in ray.nodes() if n["Alive"]
         for k in n["Resources"] if k.startswith("{MARK}")}}
print(json.dumps(names))
"""

# The nodes running a task or actor of name argv[2] now, one JSON line: Ray's state API, asked of
# the dashboard at argv[1].
RUNNING_ON = """
import json, sys
from ray.util.state import list_tasks
tasks = list_tasks(address=sys.argv[1], filters=[("name", "=", sys.argv[2])], limit=1000)
print(json.dumps(sorted({t.node_id for t in tasks if t.state == "RUNNING" and t.node_id})))
"""


@dataclass
class RayNode:
    """One node: the `ray start --block` process leading its process group."""

    name: str
    process: subprocess.Popen
    node_id: str = ""

    def kill(self) -> None:
        """kill -9 the node: its raylet, object store, agents and every worker on it. The
        workers may sit in process groups of their own (Ray puts them there to clean up after
        them), and one left alive goes on training for the seconds it takes to notice its raylet
        is gone: so every process under the node is found first and killed with the group."""
        tree = descendants(self.process.pid)
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for pid in tree:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(timeout=30)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None


def descendants(pid: int) -> list[int]:
    """Every process under `pid` (Linux: read from /proc), children first."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # it ended while we looked
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        kids = [p for p, parent in parents.items() if parent == current]
        found += kids
        todo += kids
    return found


@dataclass
class RayNodes:
    """A head node (no CPUs of its own unless asked: the trials go to the workers) and workers
    started with `add_worker`. `env` is what a driver, `ray job` or any process that talks to
    the cluster needs: its token and its own temporary folder."""

    root: Path
    head_cpus: int = 0
    dashboard: bool = False
    env: dict[str, str] = field(default_factory=dict)
    nodes: list[RayNode] = field(default_factory=list)
    port: int = 0
    dashboard_port: int = 0
    temp: Path | None = None

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://{LOOPBACK}:{self.dashboard_port}"

    def start(self, extra_env: dict[str, str] | None = None) -> RayNodes:
        """The head; `extra_env` goes to every process of the cluster (and into `env`)."""
        # A short folder (Ray's socket paths must stay under 108 bytes), Ray's temporary root for
        # every process of the cluster: its sessions and its ray_current_cluster, which Ray's own
        # helpers (Ray Train's among them) read to find the cluster, are in <temp>/ray.
        temp = Path(tempfile.mkdtemp(prefix="mgcr-", dir="/tmp"))
        self.temp = temp
        token = self.root / "auth_token"
        token.write_text(secrets.token_hex(32))
        self.env = {
            **os.environ,
            "RAY_TMPDIR": str(temp),
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(token),
            "RAY_USAGE_STATS_ENABLED": "0",
            # `python` and `ray` in a job or a node's shell are this environment's.
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            # Every node at 127.0.0.1: Ray otherwise swaps the loopback for the machine's address.
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        }
        self.env.update(extra_env or {})
        self.env.pop("RAY_ADDRESS", None)
        self.env.pop("RAY_AUTH_TOKEN", None)
        self.port, self.dashboard_port = free_port(), free_port()
        self._start(
            "head",
            [
                "--head",
                f"--port={self.port}",
                f"--num-cpus={self.head_cpus}",
                f"--include-dashboard={str(self.dashboard).lower()}",
                f"--dashboard-host={LOOPBACK}",
                f"--dashboard-port={self.dashboard_port}",
                f"--ray-client-server-port={free_port()}",
            ],
        )
        return self

    def add_worker(self, cpus: int = 1, gpus: int = 0) -> RayNode:
        """A worker node with `cpus` CPUs and `gpus` logical GPUs (Ray counts them; there need
        be no device behind them), joined to the head."""
        assert self.temp is not None, "start() the head first"
        name = f"worker{len(self.nodes) - 1}"
        return self._start(
            name,
            [
                f"--address={self.address}",
                f"--num-cpus={cpus}",
                f"--num-gpus={gpus}",
                # Its own folder, as on a machine of its own: sockets, logs, and the unpacked
                # working directories of jobs, which each node's agent removes when done with.
                f"--temp-dir={self.temp / name}",
            ],
        )

    def _start(self, name: str, args: list[str]) -> RayNode:
        log = open(self.root / f"{name}.log", "wb")  # closed below; the node keeps its copy
        command = [RAY] if name == "head" else [sys.executable, "-c", WORKER_START]
        process = subprocess.Popen(
            [
                *command,
                "start",
                "--block",
                "--disable-usage-stats",
                f"--node-ip-address={LOOPBACK}",
                f"--dashboard-agent-listen-port={free_port()}",
                f"--metrics-export-port={free_port()}",
                "--min-worker-port=0",
                "--max-worker-port=0",
                f"--object-store-memory={100 * 1024 * 1024}",
                f"--resources={json.dumps({f'{MARK}{name}': 1})}",
                *args,
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: `kill` ends this node and no other
        )
        log.close()
        node = RayNode(name, process)
        self.nodes.append(node)
        # One node at a time: on 2 CPUs, nodes started together can miss Ray's 30 s start-up.
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in (text := (self.root / f"{name}.log").read_text()):
            if not node.alive or time.monotonic() > deadline:
                raise RuntimeError(f"ray start ({name}) failed: {text[-2000:]}")
            time.sleep(0.5)
        return node

    def wait(self, timeout: float = 60) -> dict[str, str]:
        """Until every node started here since the last wait is seen alive by a driver; then
        {node name: node id} of the live nodes, the new ids also set on their nodes."""
        new = [n for n in self.nodes if not n.node_id]
        deadline = time.monotonic() + timeout
        while True:
            for node in new:
                if not node.alive:
                    text = (self.root / f"{node.name}.log").read_text()[-2000:]
                    raise RuntimeError(f"ray start ({node.name}) exited: {text}")
            ids = self.node_ids()
            if all(n.name in ids for n in new):
                for node in new:
                    node.node_id = ids[node.name]
                return ids
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {sorted(ids)} of the nodes joined in {timeout:.0f} s")
            time.sleep(1.0)

    def node_ids(self) -> dict[str, str]:
        """{node name: node id} of the nodes alive now, asked by a driver of its own (this
        process may hold another Ray, without this cluster's token)."""
        out = subprocess.run(
            [sys.executable, "-c", LIST_NODES, self.address],
            env=self.env,
            capture_output=True,
            text=True,
        )
        lines = out.stdout.strip().splitlines()
        return json.loads(lines[-1]) if out.returncode == 0 and lines else {}

    def running_on(self, name: str) -> list[str]:
        """The ids of the nodes where a task called `name` runs now (needs the dashboard)."""
        out = subprocess.run(
            [sys.executable, "-c", RUNNING_ON, self.dashboard_url, name],
            env=self.env,
            capture_output=True,
            text=True,
        )
        lines = out.stdout.strip().splitlines()
        return json.loads(lines[-1]) if out.returncode == 0 and lines else []

    def by_id(self, node_id: str) -> RayNode:
        return next(n for n in self.nodes if n.node_id == node_id)

    def workers(self) -> list[RayNode]:
        """The worker nodes alive (a killed one is left out)."""
        return [n for n in self.nodes if n.name != "head" and n.alive]

    def stop(self) -> None:
        """Every node, workers first; only this cluster's process groups."""
        for node in reversed(self.nodes):
            node.kill()
        if self.temp is not None:
            shutil.rmtree(self.temp, ignore_errors=True)
