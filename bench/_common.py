"""Shared helpers of the selection benchmarks: environment, child processes, tables, JSON.

Benchmarks never assert on time. Every measurement that reports memory runs in a fresh child
process (``python bench/<script>.py --child '<json>'``), which prints one JSON line with its
timings and its own peak resident set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``), so
no measurement inherits another's memory or warm caches.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

#: Prefix of the line a child prints with its result.
RESULT_TAG = "@@result "


def version(package: str) -> str | None:
    """The installed version of ``package``, without importing it (``None`` if absent)."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """Versions, CPU count, load and the command line of this run."""
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gib": round(total_memory_bytes() / 2**30, 1),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "command": command_line(),
        "git_commit": _git_commit(),
    }
    for pkg in ("jestcore", "numpy", "array-api-compat", "torch", "jax", "jaxlib"):
        env[pkg] = version(pkg)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "XLA_FLAGS"):
        if var in os.environ:
            env[var] = os.environ[var]
    return env


def command_line() -> str:
    """The command that started this process, relative to the repository root."""
    script = Path(sys.argv[0])
    try:
        script = script.resolve().relative_to(ROOT)
    except ValueError:
        pass
    return " ".join(["python", str(script), *sys.argv[1:]])


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def total_memory_bytes() -> int:
    """Physical memory of this machine in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def peak_rss_mib() -> float:
    """This process's peak resident set size so far, in MiB (Linux reports KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


def current_rss_mib() -> float:
    """This process's resident set size now, in MiB."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return float("nan")
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def child_main(spec_json: str, run: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """Runs one measurement in this (child) process and prints its result line."""
    spec = json.loads(spec_json)
    result = run(spec)
    result["peak_rss_mib"] = round(peak_rss_mib(), 1)
    print(RESULT_TAG + json.dumps(result), flush=True)


def parse_args(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    run: Callable[[dict[str, Any]], dict[str, Any]],
    *,
    quick: str,
) -> argparse.Namespace | None:
    """Adds ``--quick``, ``--out`` and the hidden ``--child``, then parses ``argv``.

    In a child process (``--child SPEC``) it runs the measurement, prints its result line and
    returns ``None``; otherwise it returns the arguments. ``quick`` is the help of ``--quick``.
    """
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--out", type=Path, default=None, help="JSON output path (plot alongside)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        child_main(args.child, run)
        return None
    return args


def run_child(script: Path, spec: dict[str, Any], *, timeout: float) -> dict[str, Any]:
    """Runs ``script --child spec`` in a fresh interpreter and returns its result.

    On failure the result holds ``error`` (the child's last lines of output) instead of timings;
    on timeout, ``error = "timeout after ... s"``.
    """
    cmd = [sys.executable, str(script), "--child", json.dumps(spec)]
    start = time.perf_counter()
    with tempfile.TemporaryFile(mode="w+") as log:
        try:
            proc = subprocess.run(
                cmd, stdout=log, stderr=subprocess.STDOUT, timeout=timeout, check=False, text=True
            )
        except subprocess.TimeoutExpired:
            return {"error": f"timeout after {timeout:.0f} s"}
        log.seek(0)
        output = log.read()
    wall = time.perf_counter() - start
    for line in reversed(output.splitlines()):
        if line.startswith(RESULT_TAG):
            result = json.loads(line[len(RESULT_TAG) :])
            result["child_wall_seconds"] = round(wall, 3)
            return result
    tail = "\n".join(output.strip().splitlines()[-8:])
    return {"error": f"exit status {proc.returncode}: {tail}"}


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: numbers to ``digits`` significant figures, ``None`` as '-'."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != value:
            return "nan"
        return f"{value:.{digits}g}"
    return str(value)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A plain-text table of ``rows`` restricted to ``columns``."""
    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Writes ``payload`` as JSON atomically (a temporary file, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=2, sort_keys=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def best_of(
    fn: Callable[[], Any], repeats: int, sync: Callable[[Any], Any] = lambda r: r
) -> tuple[float, float, Any]:
    """The fastest of ``repeats`` timed calls of ``fn``: wall seconds, CPU seconds, last result.

    CPU seconds are this process's (all threads), which on a shared machine show the work done
    when the wall clock also counts waiting for other processes.
    """
    best, cpu, result = float("inf"), float("nan"), None
    for _ in range(max(1, repeats)):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = sync(fn())
        wall = time.perf_counter() - start
        if wall < best:
            best, cpu = wall, time.process_time() - start_cpu
    return best, cpu, result
