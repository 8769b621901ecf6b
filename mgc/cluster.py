"""Ray start-up, the same for preprocessing and sweeps: join a cluster or start a local Ray."""

from __future__ import annotations

import time


def init_ray(address: str | None = None, num_cpus: int | None = None, quiet: bool = False) -> float:
    """Join the Ray at `address`, or start a local one with `num_cpus` CPUs (all when None) and
    its dashboard on 127.0.0.1:8265. Returns the seconds it took; 0 when Ray is already up.
    `quiet` keeps workers' output off this terminal (preprocessing prints its own progress)."""
    import ray

    if ray.is_initialized():
        return 0.0
    t0 = time.perf_counter()
    if address:
        ray.init(address=address, log_to_driver=not quiet)
    else:
        ray.init(
            num_cpus=num_cpus,
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            log_to_driver=not quiet,
        )
    return time.perf_counter() - t0
