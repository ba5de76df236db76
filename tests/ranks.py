"""One launcher for tests that run several ``torch.distributed`` ranks as subprocesses.

A test file runs itself as a script: ``launch(__file__, args, world)`` starts ``world``
processes ``python FILE *args RANK WORLD`` (each rank appends its rank and the world size to
``args``), waits for all of them under a hard timeout, kills any straggler, and returns each
rank's exit code and output. Ranks write their results as ``.npz`` files; :func:`load_npz`
reads them back without unpickling.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np

#: A whole rank process; collectives inside use much shorter timeouts, so a fault never hangs.
PROCESS_TIMEOUT_S = 180


def launch(
    script: str | Path, args: list[str], world: int, *, timeout: float = PROCESS_TIMEOUT_S
) -> list[tuple[int, str]]:
    """Runs ``python script *args rank world`` for every rank; returns ``(exit code, output)``."""
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), *map(str, args), str(r), str(world)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in range(world)
    ]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=timeout)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return [(p.returncode, log) for p, log in zip(procs, logs, strict=True)]


def launch_ok(script: str | Path, args: list[str], world: int) -> list[str]:
    """:func:`launch`, asserting that every rank exited 0; returns the outputs."""
    done = launch(script, args, world)
    for r, (code, log) in enumerate(done):
        assert code == 0, f"rank {r} exited {code}:\n{log}"
    return [log for _, log in done]


def init_gloo(init_file: str | Path, rank: int, world: int, *, timeout_s: float) -> None:
    """Joins a gloo process group through ``init_file``; every collective times out after
    ``timeout_s`` seconds (one thread per rank, as the ranks share the machine's cores)."""
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=timeout_s),
    )


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file a rank wrote (never unpickled)."""
    assert path.exists(), f"{path.name} was not written"
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
