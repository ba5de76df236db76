"""Streaming joint selection from embeddings vs materialising the N x N score matrix.

For super-batches of N image-text pairs (embedding width d, filter ratio f, 16 chunks) this times,
on NumPy, PyTorch (CPU) and JAX (CPU, ``jax.jit``), each measurement in a fresh child process
that also reports its peak resident set size:

* (a) ``stream``: ``jestcore.joint_select_embeddings`` (never forms an N x N array);
* (b) ``materialise``: ``sigmoid_loss_matrix`` for both models, ``learnability``, then
  ``jestcore.joint_select`` on the N x N matrix;
* (c) ``literal``: the same materialisation, then the paper's listing of Algorithm 1, which
  re-sums the whole masked score matrix every chunk (N <= 16384 only);
* (d) ``floor``: the arithmetic (a) cannot avoid, alone: the four ``(c x d) @ (d x N)`` products
  per chunk (all chunks but the last) and the column sums of their softplus, with the
  backend's own ``sum_softplus`` and no selection logic.

plus a paper-scale run of (a), N = 163,840, b = 32,768, d = 256, on the fastest CPU backend.

Every backend is whatever ``jestcore.backends.get_backend`` picks for the inputs. On JAX every
method runs under ``jax.jit`` (``n_select``, ``n_chunks`` and ``score`` static; the seed traced)
and the compile time is reported separately. (a), (b) and (c) use the same seed and must select
the same indices up to floating-point near-ties; ``overlap`` is the fraction of (a)'s NumPy
selection that each run shares. Sizes of (b)/(c) that would not fit in memory or would run longer
than ``--max-seconds`` (estimated from the smaller sizes) are skipped, and the output says so.

Run ``python bench/select_embeddings.py`` (tens of minutes on 2 cores) or ``--quick`` (a smoke
run). Prints a table, writes ``bench/results/select_embeddings.json`` and a log-log plot of time
against N, ``bench/results/select_embeddings.png``.

Targets (issue 3), as ratios from one run: at N = 16384 on the fastest backend, (a) <= 1.5x (d),
(a) >= 25x faster than (c), peak RSS of (a) <= 1 GB; the paper-scale run's peak RSS < 4 GB.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c

SCRIPT = Path(__file__).resolve()
FRAMEWORKS = ("numpy", "torch", "jax")
METHODS = {"a": "stream", "b": "materialise", "c": "literal", "d": "floor"}
LITERAL_MAX_N = 16384
TARGET_N = 16384
#: Peak bytes per N^2 score entry of (b) and (c): about five N x N float32 arrays live at once.
MATRIX_BYTES_PER_ENTRY = 5 * 4

# --------------------------------------------------------------------------------------------
# Child side: one measurement per process.


def _embeddings(n: int, d: int, seed: int) -> dict[str, Any]:
    """Float32 unit-norm embeddings of a learner and a reference model (NumPy, no float64)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = {}
    for model, noise in (("learner", 1.5), ("reference", 0.5)):
        base = rng.standard_normal((n, d), dtype=np.float32)
        for kind in ("image", "text"):
            x = rng.standard_normal((n, d), dtype=np.float32)
            x *= noise
            x += base
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            out[f"{model}.{kind}"] = x
        del base
    return out


def _to_framework(arrays: dict[str, Any], framework: str, device: Any = None) -> dict[str, Any]:
    """The NumPy ``arrays`` as ``framework`` arrays on ``device`` (each NumPy copy freed)."""
    if framework == "torch":
        import torch

        return {k: torch.from_numpy(arrays.pop(k)).to(device or "cpu") for k in list(arrays)}
    if framework == "jax":
        import jax

        out = {}
        for k in list(arrays):
            out[k] = jax.device_put(arrays.pop(k), device)
            out[k].block_until_ready()
        return out
    return arrays


def _literal(xp: Any, scores: Any, n_select: int, n_chunks: int, seed: Any) -> Any:
    """The paper's listing of Algorithm 1, in array-API operations, with Gumbel top-k draws."""
    import jestcore

    n = scores.shape[0]
    sizes = jestcore.chunk_sizes(n_select, n_chunks)
    device = getattr(scores, "device", None)
    noise = jestcore.gumbel_noise(seed, (n_chunks, n), xp=xp, device=device)
    positions = xp.arange(n, device=device)
    logits_ii = xp.take(xp.reshape(scores, (-1,)), positions * (n + 1))

    def top(logits: Any, k: int) -> Any:
        return xp.argsort(-(logits + noise[k, ...]), stable=True)[: sizes[k]]

    inds = top(logits_ii, 0)
    for k in range(1, len(sizes)):
        # np.eye(n)[inds].sum(axis=0), as a vector of the scores' dtype
        is_sampled = xp.astype(xp.any(positions[None, :] == inds[:, None], axis=0), scores.dtype)
        logits_ij = xp.sum(scores * xp.reshape(is_sampled, (n, 1)), axis=0)
        logits_ji = xp.sum(scores * xp.reshape(is_sampled, (1, n)), axis=1)
        logits = logits_ii + logits_ij + logits_ji
        logits = logits - is_sampled * 1e8
        inds = xp.concat((inds, top(logits, k)))
    return inds


def _floor(xp: Any, backend: Any, models: list[tuple[Any, ...]], sizes: tuple[int, ...]) -> Any:
    """The four products per chunk and their softplus column sums, without selection logic."""
    n = models[0][0].shape[0]
    acc = xp.zeros(n, dtype=models[0][0].dtype, device=getattr(models[0][0], "device", None))
    start = 0
    for size in sizes[:-1]:
        for image, text, scale, bias, sign in models:
            rows = backend.sum_softplus(
                image[start : start + size, ...] @ xp.matrix_transpose(text), scale, bias
            )
            cols = backend.sum_softplus(
                text[start : start + size, ...] @ xp.matrix_transpose(image), scale, bias
            )
            acc = acc + sign * (rows + cols)
        start += size
    return acc


def _materialise(xp: Any, m: dict[str, Any], scale: float, bias: float) -> Any:
    import jestcore

    learner = jestcore.sigmoid_loss_matrix(
        m["learner.image"], m["learner.text"], scale=scale, bias=bias
    )
    reference = jestcore.sigmoid_loss_matrix(
        m["reference.image"], m["reference.text"], scale=scale, bias=bias
    )
    return jestcore.learnability(learner, reference)


def child_inputs(spec: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """In a child: the framework set up (JAX on CPU, PyTorch's threads) and the embeddings.

    Returns:
        ``spec``'s synthetic embeddings on its framework, and their namespace.
    """
    fw = spec["framework"]
    if fw == "jax":
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import array_api_compat

    if fw == "torch" and spec.get("torch_threads"):
        import torch

        torch.set_num_threads(spec["torch_threads"])
    arrays = _to_framework(_embeddings(spec["N"], spec["d"], spec["seed"]), fw)
    return arrays, array_api_compat.array_namespace(arrays["learner.image"])


def run_measurement(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs one (framework, method, N) measurement; called in the child process."""
    fw, method = spec["framework"], spec["method"]
    arrays, xp = child_inputs(spec)
    import numpy as np
    from jestcore.backends import get_backend

    import jestcore

    scale, bias = spec["scale"], spec["bias"]
    n_select, n_chunks, seed = spec["n_select"], spec["n_chunks"], spec["seed"]
    backend = get_backend(xp)
    learner = jestcore.PairEmbeddings(arrays["learner.image"], arrays["learner.text"], scale, bias)
    reference = jestcore.PairEmbeddings(
        arrays["reference.image"], arrays["reference.text"], scale, bias
    )
    sizes = jestcore.chunk_sizes(n_select, n_chunks)
    models = [
        (arrays["learner.image"], arrays["learner.text"], scale, bias, 1),
        (arrays["reference.image"], arrays["reference.text"], scale, bias, -1),
    ]

    # gain=1.0: Algorithm 1 as printed, as the literal (c) samples (the gain costs nothing).
    def stream(learner: Any, reference: Any, seed: Any) -> Any:
        return jestcore.joint_select_embeddings(
            learner, reference, n_select, n_chunks=n_chunks, seed=seed, gain=1.0
        )

    def materialise(m: dict[str, Any], seed: Any) -> Any:
        return jestcore.joint_select(
            _materialise(xp, m, scale, bias), n_select, n_chunks=n_chunks, seed=seed, gain=1.0
        )

    def literal(m: dict[str, Any], seed: Any) -> Any:
        return _literal(xp, _materialise(xp, m, scale, bias), n_select, n_chunks, seed)

    def floor(models: list[tuple[Any, ...]]) -> Any:
        return _floor(xp, backend, models, sizes)

    fn, fn_args = {
        "a": (stream, (learner, reference, seed)),
        "b": (materialise, (arrays, seed)),
        "c": (literal, (arrays, seed)),
        "d": (floor, (models,)),
    }[method]
    result: dict[str, Any] = {"rss_after_setup_mib": round(c.current_rss_mib(), 1)}
    if fw == "torch":
        import torch

        result["threads"] = torch.get_num_threads()
    sync: Any = lambda r: r  # noqa: E731
    if fw == "jax":
        import jax
        import jax.numpy as jnp

        if method != "d":
            fn_args = (*fn_args[:-1], jnp.asarray(seed, dtype=jnp.uint32))
        start = time.perf_counter()
        compiled = jax.jit(fn).lower(*fn_args).compile()
        result["compile_seconds"] = round(time.perf_counter() - start, 4)
        memory = compiled.memory_analysis()
        if memory is not None:  # XLA's plan for the temporaries of the compiled program
            result["xla_temp_mib"] = round(memory.temp_size_in_bytes / 2**20, 1)
        fn = compiled

        def sync(r: Any) -> Any:
            return jax.block_until_ready(r)

    elif spec["warmup"]:
        # Imports and first-call set-up (lazy backend modules, thread pools) at a tiny size.
        small = _to_framework(_embeddings(64, 8, 1), fw)
        jestcore.joint_select_embeddings(
            jestcore.PairEmbeddings(small["learner.image"], small["learner.text"], scale, bias),
            jestcore.PairEmbeddings(small["reference.image"], small["reference.text"], scale, bias),
            8,
            n_chunks=4,
            seed=0,
        )
    seconds, cpu_seconds, out = c.best_of(lambda: fn(*fn_args), spec["repeats"], sync)
    result["seconds"] = round(seconds, 5)
    result["cpu_seconds"] = round(cpu_seconds, 5)
    if method != "d":
        result["indices"] = np.asarray(out).astype(np.int64).tolist()
    return result


# --------------------------------------------------------------------------------------------
# Parent side: plan, run, report.


def _skip_reason(
    method: str, fw: str, n: int, done: dict[tuple[str, str, int], dict[str, Any]], args: Any
) -> str | None:
    if method == "c" and n > LITERAL_MAX_N:
        return f"the literal Algorithm 1 is run for N <= {LITERAL_MAX_N} only"
    if method in ("b", "c"):
        need = MATRIX_BYTES_PER_ENTRY * n * n
        have = c.total_memory_bytes()
        if need > 0.8 * have:
            return (
                f"needs about {need / 2**30:.0f} GiB (five N x N float32 arrays), "
                f"more than this machine's {have / 2**30:.0f} GiB"
            )
        smaller = [
            (m, r) for (f, meth, m), r in done.items() if f == fw and meth == method and m < n
        ]
        smaller = [(m, r) for m, r in smaller if "seconds" in r]
        if smaller:
            m, r = max(smaller, key=lambda t: t[0])
            estimate = r["seconds"] * (n / m) ** 2
            if estimate > args.max_seconds:
                return (
                    f"estimated {estimate:.0f} s from N = {m} (O(N^2) scaling), over "
                    f"--max-seconds {args.max_seconds:g}"
                )
    return None


def _overlap(a: list[int] | None, b: list[int] | None) -> float | None:
    if a is None or b is None or len(a) != len(b):
        return None
    return round(len(set(a) & set(b)) / len(a), 4)


def _plot(rows: list[dict[str, Any]], papers: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    colors = {"numpy": "tab:blue", "torch": "tab:red", "jax": "tab:green"}
    styles = {"a": "o-", "b": "s--", "c": "^:", "d": "x-."}
    for fw in FRAMEWORKS:
        for m, name in METHODS.items():
            pts = sorted(
                (r["N"], r["seconds"])
                for r in rows
                if r["framework"] == fw and r["method"] == name and r.get("seconds")
            )
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, styles[m], color=colors[fw], label=f"{fw} ({m}) {name}", ms=5)
    for run, marker in zip(papers, "*PDX", strict=False):
        if run.get("seconds"):
            ax.plot(
                [run["N"]], [run["seconds"]], marker, color=colors[run["framework"]], ms=12,
                label=f"{run['framework']} (a) paper scale, b = {run['n_select']}",
            )  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("super-batch size N")
    ax.set_ylabel("wall-clock seconds (CPU backends)")
    ax.set_title("Joint selection from embeddings, d = 256, f = 0.8, 16 chunks")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _spec(fw: str, method: str, n: int, n_select: int, args: Any) -> dict[str, Any]:
    return {
        "framework": fw,
        "method": method,
        "N": n,
        "d": args.dim,
        "n_select": n_select,
        "n_chunks": args.chunks,
        "seed": args.seed,
        "scale": args.scale,
        "bias": args.bias,
        "repeats": args.repeats if n <= args.repeat_max_n else 1,
        "warmup": True,
        "torch_threads": args.torch_threads,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384, 65536])
    p.add_argument("--dim", type=int, default=256, help="embedding width d")
    p.add_argument("--filter-ratio", type=float, default=0.8)
    p.add_argument("--chunks", type=int, default=16)
    p.add_argument("--frameworks", nargs="+", choices=FRAMEWORKS, default=list(FRAMEWORKS))
    p.add_argument("--methods", nargs="+", choices=sorted(METHODS), default=sorted(METHODS))
    p.add_argument("--scale", type=float, default=10.0, help="sigmoid-loss temperature")
    p.add_argument("--bias", type=float, default=-10.0, help="sigmoid-loss bias")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--torch-threads", type=int, default=None, help="default: torch's own")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats (best) for small N")
    p.add_argument("--repeat-max-n", type=int, default=4096, help="larger N are timed once")
    p.add_argument("--max-seconds", type=float, default=300.0, help="skip (b)/(c) above this")
    p.add_argument("--timeout", type=float, default=1800.0, help="per child process, seconds")
    p.add_argument("--no-paper", action="store_true", help="skip the paper-scale run")
    p.add_argument("--paper-n", type=int, default=163840)
    p.add_argument("--paper-b", type=int, default=32768)
    p.add_argument(
        "--paper-frameworks",
        nargs="+",
        choices=(*FRAMEWORKS, "fastest"),
        default=["fastest"],
        help="backends of the paper-scale run ('fastest': by (a) at the largest N)",
    )
    args = c.parse_args(p, argv, run_measurement, quick="tiny sizes (a smoke run)")
    if args is None:
        return 0
    if args.quick:
        args.sizes, args.dim, args.paper_n, args.paper_b = [256], 16, 1024, 256
    out = args.out or (
        Path(tempfile.gettempdir()) / "jestcore-bench" / "select_embeddings.json"
        if args.quick
        else c.RESULTS / "select_embeddings.json"
    )
    env = c.environment()
    rows: list[dict[str, Any]] = []
    done: dict[tuple[str, str, int], dict[str, Any]] = {}
    plan = [(n, fw, m) for n in sorted(args.sizes) for fw in args.frameworks for m in args.methods]
    for n, fw, m in plan:
        n_select = round(n * (1 - args.filter_ratio))
        row: dict[str, Any] = {
            "framework": fw,
            "method": METHODS[m],
            "label": m,
            "N": n,
            "n_select": n_select,
        }
        reason = _skip_reason(m, fw, n, done, args)
        if reason:
            row["skipped"] = reason
            print(f"skip {fw} ({m}) N = {n}: {reason}", file=sys.stderr, flush=True)
        else:
            print(f"run  {fw} ({m}) N = {n} ...", file=sys.stderr, end=" ", flush=True)
            result = c.run_child(SCRIPT, _spec(fw, m, n, n_select, args), timeout=args.timeout)
            print(result.get("seconds", result.get("error")), file=sys.stderr, flush=True)
            row.update(result)
        done[(fw, m, n)] = row
        rows.append(row)
    for row in rows:  # agreement with NumPy's streaming selection
        ref = done.get(("numpy", "a", row["N"]), {}).get("indices")
        row["overlap"] = _overlap(ref, row.get("indices"))
        row["same_order"] = (
            None if ref is None or row.get("indices") is None else ref == row["indices"]
        )
    for row in rows:
        row.pop("indices", None)
        if row["label"] != "a" or not row.get("seconds"):
            continue
        for unit, suffix in (("seconds", ""), ("cpu_seconds", "_cpu")):
            floor = done.get((row["framework"], "d", row["N"]), {}).get(unit)
            literal = done.get((row["framework"], "c", row["N"]), {}).get(unit)
            row["x_floor" + suffix] = round(row[unit] / floor, 3) if floor else None
            row["speedup_vs_literal" + suffix] = round(literal / row[unit], 2) if literal else None

    papers: list[dict[str, Any]] = []
    if not args.no_paper:
        chosen = [_fastest(rows) if fw == "fastest" else fw for fw in args.paper_frameworks]
        if None in chosen:
            print("skip paper-scale run: no (a) timing to pick a backend", file=sys.stderr)
        for fw in dict.fromkeys(f for f in chosen if f is not None):
            spec = _spec(fw, "a", args.paper_n, args.paper_b, args)
            spec["repeats"] = 1
            print(f"run  paper scale {fw} (a) N = {args.paper_n} ...", file=sys.stderr, end=" ")
            result = c.run_child(SCRIPT, spec, timeout=args.timeout)
            print(result.get("seconds", result.get("error")), file=sys.stderr, flush=True)
            result.pop("indices", None)
            papers.append(
                {
                    "framework": fw,
                    "method": "stream",
                    "label": "a",
                    "N": args.paper_n,
                    "n_select": args.paper_b,
                    "paper_scale": True,
                    "fastest": fw == _fastest(rows),
                    **result,
                }
            )
    columns = [
        "framework", "label", "method", "N", "seconds", "cpu_seconds", "compile_seconds",
        "peak_rss_mib",
        "x_floor", "x_floor_cpu", "speedup_vs_literal", "speedup_vs_literal_cpu", "overlap",
        "same_order",
    ]  # fmt: skip
    print(c.table(rows + papers, columns))
    for row in rows:
        if row.get("skipped") or row.get("error"):
            print(f"  {row['framework']} ({row['label']}) N = {row['N']}: "
                  f"{row.get('skipped') or row.get('error')}")  # fmt: skip
    summary = _summary(rows, papers)
    for line in summary.get("lines", []):
        print(line)
    plot = out.with_suffix(".png")
    _plot(rows, papers, plot)
    c.write_json(
        out,
        {
            "title": "Joint selection from embeddings: streaming vs materialised vs literal",
            "description": (
                f"Seconds and peak RSS (fresh process each) of (a) joint_select_embeddings, "
                f"(b) materialise + joint_select, (c) the literal Algorithm 1, (d) the products "
                f"and softplus sums alone; d = {args.dim}, f = {args.filter_ratio}, "
                f"{args.chunks} chunks, CPU."
            ),
            "command": env["command"],
            "environment": env,
            "summary": {k: v for k, v in summary.items() if k != "lines"},
            "results": rows + papers,
        },
    )
    print(f"wrote {out} and {plot}")
    return 0


def _fastest(rows: list[dict[str, Any]]) -> str | None:
    """The framework with the fastest (a) at the largest N that every framework ran."""
    timed = [r for r in rows if r["label"] == "a" and r.get("seconds")]
    if not timed:
        return None
    n = max(r["N"] for r in timed)
    return min((r for r in timed if r["N"] == n), key=lambda r: r["seconds"])["framework"]


def _summary(rows: list[dict[str, Any]], papers: list[dict[str, Any]]) -> dict[str, Any]:
    a_rows = [r for r in rows if r["label"] == "a" and r["N"] == TARGET_N and r.get("seconds")]
    out: dict[str, Any] = {"lines": []}
    if a_rows:
        best = min(a_rows, key=lambda r: r["seconds"])
        x_floor, speedup = best.get("x_floor"), best.get("speedup_vs_literal")
        rss = best.get("peak_rss_mib")
        out["fastest_at_target_N"] = best["framework"]
        checks = {
            "a_over_floor<=1.5": (x_floor, x_floor is not None and x_floor <= 1.5),
            "speedup_vs_literal>=25": (speedup, speedup is not None and speedup >= 25),
            "peak_rss_mib<=1000": (rss, rss is not None and rss <= 1000),
        }
        out["targets_at_N=16384"] = {k: {"value": v, "met": ok} for k, (v, ok) in checks.items()}
        out["lines"].append(f"\nTargets at N = {TARGET_N}, fastest backend {best['framework']}:")
        for k, (v, ok) in checks.items():
            out["lines"].append(f"  {k}: {c.fmt(v)} -> {'met' if ok else 'NOT met'}")
    for run in papers:
        rss = run.get("peak_rss_mib")
        ok = rss is not None and rss < 4096
        out.setdefault("paper_scale", []).append(
            {
                "framework": run["framework"],
                "fastest": run["fastest"],
                "seconds": run.get("seconds"),
                "peak_rss_mib": rss,
                "met_rss<4GiB": ok,
                "error": run.get("error"),
            }
        )
        out["lines"].append(
            f"  paper scale ({run['framework']}{', fastest' if run['fastest'] else ''}): "
            f"{c.fmt(run.get('seconds'))} s, peak RSS {c.fmt(rss)} MiB -> "
            f"{'met' if ok else 'NOT met'} (< 4096 MiB)"
        )
    return out


if __name__ == "__main__":
    raise SystemExit(main())
