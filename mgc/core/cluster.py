"""Ray start-up, the same for preprocessing and sweeps: join a cluster or start a local Ray."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)


def dashboard_hint(url: str, env: Mapping[str, str] | None = None) -> str:
    """One log line: where the Ray dashboard is and how to get past its token prompt.

    Ray (2.60) turns token authentication on for a local `ray.init`; the dashboard then asks for
    the token, which `ray get-auth-token` prints. The line says where the token comes from, in
    Ray's own order (RAY_AUTH_TOKEN, then the file RAY_AUTH_TOKEN_PATH, then ~/.ray/auth_token),
    and never contains the token itself."""
    env = os.environ if env is None else env
    if not url.startswith(("http://", "https://")):
        url = f"http://{url}"
    if env.get("RAY_AUTH_MODE", "").lower() != "token":
        return f"Ray dashboard: {url} (token authentication is off)"
    if env.get("RAY_AUTH_TOKEN"):
        source = "from $RAY_AUTH_TOKEN"
    elif env.get("RAY_AUTH_TOKEN_PATH"):
        source = f"in {env['RAY_AUTH_TOKEN_PATH']}"
    else:
        source = f"in {Path.home() / '.ray' / 'auth_token'}"
    return (
        f"Ray dashboard: {url} - it asks for the cluster's token: "
        f"paste what `ray get-auth-token` prints (the token is {source})"
    )


def init_ray(
    address: str | None = None,
    num_cpus: int | None = None,
    quiet: bool = False,
    dashboard_port: int | None = None,
) -> float:
    """Join the Ray at `address`, or start a local one with `num_cpus` CPUs (all when None) and
    its dashboard on 127.0.0.1:`dashboard_port` (None: Ray's 8265, or the next free port when
    another Ray holds it). Logs the dashboard's address and how to authenticate. Returns the
    seconds it took; 0 when Ray is already up. `quiet` keeps workers' output off this terminal
    (preprocessing prints its own progress)."""
    import ray

    if ray.is_initialized():
        return 0.0
    t0 = time.perf_counter()
    # ray.init puts in its own SIGTERM handler (an abrupt exit); the caller's (the CLIs': stop
    # as Ctrl-C does, saying how to continue) is put back.
    main_thread = threading.current_thread() is threading.main_thread()
    on_sigterm = signal.getsignal(signal.SIGTERM) if main_thread else None
    if address:
        context = ray.init(address=address, log_to_driver=not quiet)
    else:
        context = ray.init(
            num_cpus=num_cpus,
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            dashboard_port=dashboard_port,
            log_to_driver=not quiet,
        )
    if main_thread and on_sigterm is not None:
        signal.signal(signal.SIGTERM, on_sigterm)
    seconds = time.perf_counter() - t0
    if context.dashboard_url:  # empty without ray[default]'s dashboard
        log.info(dashboard_hint(context.dashboard_url))
    return seconds


_said_no_cuda = False


def placement() -> dict[str, str]:
    """Where the calling Ray task or actor runs: its node's id (unique even where every node of
    a cluster shares one IP) and the GPUs Ray gave it ("0,1"; "" for none); {} outside Ray.

    A GPU that Ray counted but torch cannot see (a logical GPU, a node without its driver) is
    said once per worker process, in one line: the run trains on the CPU rather than failing."""
    import ray
    import torch

    global _said_no_cuda
    if not ray.is_initialized():
        return {}
    node = ray.get_runtime_context().get_node_id()
    gpus = [str(g) for g in ray.get_gpu_ids()]
    if gpus and not torch.cuda.is_available() and not _said_no_cuda:
        _said_no_cuda = True
        log.warning(
            "node %s gave this run GPU %s, but torch sees no CUDA device there: it trains on "
            "the CPU",
            node[:8],
            ",".join(gpus),
        )
    return {"node_id": node, "gpu_ids": ",".join(gpus)}
