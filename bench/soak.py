"""Soak test: thousands of consecutive selections per backend, watching resident memory.

Each backend runs in its own fresh child process: NumPy and PyTorch through the specification
(``jestcore.joint_select_embeddings``, ``joint_select`` on a score matrix, ``independent_select``),
JAX through its adapter, jitted (``jestcore.adapters.jax.joint_select_embeddings`` and
``joint_select``; the spec's ``independent_select`` under ``jax.jit``). Every selection uses a new
seed; super-batch sizes cycle through N = 64, 128, 256 and 512 (b = N / 4, 4 or 16 chunks, d = 32)
and through three data sets per size. A warm-up pass runs every combination first (JAX compiles
each one once there), so that what follows is the steady state of a training loop.

The child samples its resident set size (``/proc/self/statm``) at start (after imports and data),
after the warm-up, and every ``--sample-every`` selections up to the end. Growth is judged after
warm-up: ``growth`` is the mean of the last three samples minus the mean of the first three;
``slope`` the least-squares trend in MiB per 1000 selections; ``noise`` the standard deviation of
the samples around that trend; ``late_growth`` the growth over the second half alone (a leak
grows linearly, allocator settling flattens out). The verdict is "growth beyond noise" when
``growth`` exceeds ``max(4 MiB, 3 * noise)`` (4 MiB: allocator arenas and page granularity move
RSS by a few MiB without any leak) -- a leak of even 1 KiB per selection would add about 10 MiB
over 10,000.

Run ``python bench/soak.py`` (10,000 selections per backend: a few minutes on 2 cores) or
``--quick`` (500). Prints a table, writes ``bench/results/soak.json`` and a plot of RSS against
selections, ``bench/results/soak.png``. Nothing here asserts: the verdict is reported.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c

SCRIPT = Path(__file__).resolve()
FRAMEWORKS = ("numpy", "torch", "jax")
SIZES = (64, 128, 256, 512)
CHUNKS = (4, 16)
PATHS = ("embeddings", "matrix", "independent")
DIM = 32
VARIANTS = 3
#: Growth below this is allocator noise, not a leak (see the module docstring).
FLOOR_MIB = 4.0

# --------------------------------------------------------------------------------------------
# Child side.


def _data(n: int, variant: int) -> dict[str, Any]:
    """NumPy float32 embeddings of two models, their learnability matrix and its diagonal."""
    import numpy as np

    import jestcore

    rng = np.random.default_rng([n, variant])
    x = rng.standard_normal((4, n, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    learner = jestcore.PairEmbeddings(x[0], x[1], 10.0, -5.0)
    reference = jestcore.PairEmbeddings(x[2], x[3], 8.0, -4.0)
    scores = jestcore.learnability(
        jestcore.sigmoid_loss_matrix(x[0], x[1], scale=10.0, bias=-5.0),
        jestcore.sigmoid_loss_matrix(x[2], x[3], scale=8.0, bias=-4.0),
    )
    return {
        "learner": learner,
        "reference": reference,
        "scores": scores,
        "diagonal": np.ascontiguousarray(np.diagonal(scores)),
    }


def _selectors(framework: str) -> tuple[Any, Any, Any]:
    """``(convert, select, seed_of)``: NumPy data to the framework, one selection, seeds."""
    import jestcore

    if framework == "numpy":
        return (lambda a: a), _spec_select(jestcore), (lambda s: s)
    if framework == "torch":
        import torch

        def to_torch(a: Any) -> Any:
            return torch.from_numpy(a) if hasattr(a, "dtype") else a

        return to_torch, _spec_select(jestcore), (lambda s: s)

    import jax
    import jax.numpy as jnp
    from jestcore.adapters import jax as jj

    embeddings = jax.jit(
        jj.joint_select_embeddings, static_argnames=("n_select", "n_chunks", "score")
    )
    matrix = jax.jit(jj.joint_select, static_argnames=("n_select", "n_chunks"))
    independent = jax.jit(jestcore.independent_select, static_argnames=("n_select",))

    def select(path: str, d: dict[str, Any], b: int, k: int, seed: Any) -> Any:
        if path == "embeddings":
            return embeddings(d["learner"], d["reference"], n_select=b, n_chunks=k, seed=seed)
        if path == "matrix":
            return matrix(d["scores"], n_select=b, n_chunks=k, seed=seed)
        return independent(d["diagonal"], n_select=b, seed=seed)

    def to_jax(a: Any) -> Any:
        return jnp.asarray(a) if hasattr(a, "dtype") else jnp.float32(a)

    return to_jax, select, jnp.uint32  # the seed traced: one compilation per shape


def _spec_select(jestcore: Any) -> Any:
    def select(path: str, d: dict[str, Any], b: int, k: int, seed: Any) -> Any:
        if path == "embeddings":
            return jestcore.joint_select_embeddings(
                d["learner"], d["reference"], b, n_chunks=k, seed=seed
            )
        if path == "matrix":
            return jestcore.joint_select(d["scores"], b, n_chunks=k, seed=seed)
        return jestcore.independent_select(d["diagonal"], b, seed=seed)

    return select


def _convert(d: dict[str, Any], convert: Any) -> dict[str, Any]:
    import jestcore

    out = {}
    for key, value in d.items():
        if isinstance(value, jestcore.PairEmbeddings):
            out[key] = jestcore.PairEmbeddings(*(convert(a) for a in value))
        else:
            out[key] = convert(value)
    return out


def _check(idx: Any, b: int, n: int) -> None:
    import numpy as np

    got = np.asarray(idx.cpu() if hasattr(idx, "cpu") else idx)
    if got.shape != (b,) or len(set(got.tolist())) != b or got.min() < 0 or got.max() >= n:
        raise AssertionError(f"invalid selection of {b} from {n}: {got.tolist()}")


def run_soak(spec: dict[str, Any]) -> dict[str, Any]:
    """The child: warm-up, then ``spec['selections']`` selections, sampling RSS."""
    framework = spec["framework"]
    if framework == "torch" and spec.get("torch_threads"):
        import torch

        torch.set_num_threads(spec["torch_threads"])
    convert, select, seed_of = _selectors(framework)
    data = {(n, v): _convert(_data(n, v), convert) for n in SIZES for v in range(VARIANTS)}
    combos = [
        (path, n, k)
        for n in SIZES
        for path in PATHS
        for k in (CHUNKS if path != "independent" else (1,))
    ]
    rss_start = c.current_rss_mib()

    def one(i: int, check: bool) -> None:
        path, n, k = combos[i % len(combos)]
        d = data[(n, (i // len(combos)) % VARIANTS)]
        seed = (i * 2654435761 + spec["seed"]) % 2**32  # a new seed every time
        idx = select(path, d, n // 4, k, seed_of(seed))
        if check:
            _check(idx, n // 4, n)
        elif hasattr(idx, "block_until_ready"):
            idx.block_until_ready()

    start = time.perf_counter()
    for i in range(len(combos) * VARIANTS):  # every combination and data set once
        one(i, check=True)
    warmup_seconds = time.perf_counter() - start
    rss_warm = c.current_rss_mib()

    samples = [(0, rss_warm)]
    start, start_cpu = time.perf_counter(), time.process_time()
    for i in range(spec["selections"]):
        one(len(combos) * VARIANTS + i, check=i % 97 == 0)
        if (i + 1) % spec["sample_every"] == 0:
            samples.append((i + 1, c.current_rss_mib()))
    seconds = time.perf_counter() - start
    return {
        "framework": framework,
        "selections": spec["selections"],
        "combinations": len(combos),
        "warmup_seconds": round(warmup_seconds, 2),
        "seconds": round(seconds, 2),
        "cpu_seconds": round(time.process_time() - start_cpu, 2),
        "rss_start_mib": round(rss_start, 1),
        "rss_warm_mib": round(rss_warm, 1),
        "rss_end_mib": round(samples[-1][1], 1),
        "samples": [[i, round(r, 2)] for i, r in samples],
    }


# --------------------------------------------------------------------------------------------
# Parent side.


def judge(samples: list[list[float]]) -> dict[str, Any]:
    """Growth after warm-up, its trend, the noise around the trend, and the verdict."""
    xs = [s[0] for s in samples]
    ys = [s[1] for s in samples]
    head, tail = ys[:3], ys[-3:]
    growth = sum(tail) / len(tail) - sum(head) / len(head)
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
    residuals = [y - (my + slope * (x - mx)) for x, y in zip(xs, ys, strict=True)]
    noise = math.sqrt(sum(r * r for r in residuals) / max(1, len(residuals) - 2))
    threshold = max(FLOOR_MIB, 3 * noise)
    half = len(ys) // 2
    late = ys[-1] - ys[half]  # a leak keeps growing; allocator settling flattens out
    return {
        "growth_mib": round(growth, 2),
        "late_growth_mib": round(late, 2),
        "slope_mib_per_1000": round(1000 * slope, 3),
        "noise_mib": round(noise, 2),
        "threshold_mib": round(threshold, 2),
        "growth_beyond_noise": growth > threshold,
    }


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in rows:
        if "samples" in r:
            xs, ys = zip(*r["samples"], strict=True)
            label = f"{r['framework']} ({ys[0]:.0f} MiB after warm-up)"
            ax.plot(xs, [y - ys[0] for y in ys], marker=".", label=label)
    ax.axhline(FLOOR_MIB, color="grey", linestyle="--", linewidth=1, label="noise floor")
    ax.set_xlabel("selections after warm-up")
    ax.set_ylabel("RSS growth since warm-up (MiB)")
    ax.set_title("Soak: resident memory over consecutive selections, one process per backend")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--selections", type=int, default=10_000, help="per backend, after warm-up")
    p.add_argument("--sample-every", type=int, default=250, help="RSS sample interval")
    p.add_argument("--frameworks", nargs="+", choices=FRAMEWORKS, default=list(FRAMEWORKS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--torch-threads", type=int, default=None, help="default: torch's own")
    p.add_argument("--timeout", type=float, default=3600.0, help="per child process, seconds")
    args = c.parse_args(p, argv, run_soak, quick="500 selections per backend")
    if args is None:
        return 0
    if args.quick:
        args.selections, args.sample_every = 500, 25
    out = args.out or (
        Path(tempfile.gettempdir()) / "jestcore-bench" / "soak.json"
        if args.quick
        else c.RESULTS / "soak.json"
    )
    env = c.environment()
    rows: list[dict[str, Any]] = []
    for fw in args.frameworks:
        print(f"soak {fw}: {args.selections} selections ...", file=sys.stderr, flush=True)
        spec = {
            "framework": fw,
            "selections": args.selections,
            "sample_every": args.sample_every,
            "seed": args.seed,
            "torch_threads": args.torch_threads,
        }
        result = c.run_child(SCRIPT, spec, timeout=args.timeout)
        row = {"framework": fw, **result}
        if "samples" in result:
            row.update(judge(result["samples"]))
            row["ms_per_selection"] = round(1e3 * result["seconds"] / args.selections, 3)
        rows.append(row)
    columns = [
        "framework", "selections", "ms_per_selection", "rss_start_mib", "rss_warm_mib",
        "rss_end_mib", "peak_rss_mib", "growth_mib", "late_growth_mib", "slope_mib_per_1000",
        "noise_mib", "growth_beyond_noise",
    ]  # fmt: skip
    print(c.table(rows, columns))
    for r in rows:
        if "error" in r:
            print(f"{r['framework']}: {r['error']}")
    leaks = [r["framework"] for r in rows if r.get("growth_beyond_noise")]
    failed = [r["framework"] for r in rows if "error" in r]
    verdict = (
        f"growth beyond noise on {', '.join(leaks)}"
        if leaks
        else "no growth beyond noise on any backend"
        + (f" (failed: {', '.join(failed)})" if failed else "")
    )
    print(verdict)
    traces = {r["framework"]: r.pop("samples") for r in rows if "samples" in r}
    payload = {
        "title": "Soak: memory over 10,000 consecutive selections"
        if args.selections == 10_000
        else f"Soak: memory over {args.selections} consecutive selections",
        "description": (
            "Each backend in a fresh process: NumPy and PyTorch through the specification, JAX "
            "through its jitted adapter; every selection a new seed, N cycling through "
            f"{', '.join(map(str, SIZES))} (b = N/4, {' or '.join(map(str, CHUNKS))} chunks, "
            f"d = {DIM}) over three data sets, after one warm-up pass over every combination. "
            "Resident set size (MiB) at start, after warm-up and at the end; growth after "
            f"warm-up is judged against max({FLOOR_MIB:g} MiB, 3 x the noise around its trend)."
        ),
        "command": c.command_line(),
        "environment": env,
        "summary": {"verdict": verdict, "growth_beyond_noise": leaks, "failed": failed},
        "results": rows,
        "rss_samples": traces,
    }
    c.write_json(out, payload)
    png = out.with_suffix(".png")
    _plot(
        [{**r, "samples": traces.get(r["framework"])} for r in rows if r["framework"] in traces],
        png,
    )
    print(f"wrote {out} and {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
