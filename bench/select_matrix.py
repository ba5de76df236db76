"""``jestcore.joint_select`` on a given float32 N x N score matrix vs the literal Algorithm 1.

The literal Algorithm 1 is the paper's listing (Evans et al. 2024, arXiv 2406.17711, App. A)
transcribed in NumPy: every chunk it rebuilds the "already sampled" mask and re-sums the whole
masked score matrix, ``np.sum(scores * is_sampled.reshape(n, 1), axis=0)`` and
``np.sum(scores * is_sampled.reshape(1, n), axis=1)``, which is O(n_chunks * N^2) work.
``jestcore.joint_select`` keeps the conditional logits incrementally (O(N * n_select) after
reading S once). Two transcriptions of the listing are timed:

* ``literal``: the listing with its mask as a vector of the scores' dtype (float32), the
  fastest faithful form; the speed-up target is measured against this one;
* ``paper_listing``: the listing as printed, whose one-hot mask ``np.eye(n)[inds].sum(axis=0)``
  is float64 (so the masked products are float64 too).

Both draw each chunk by Gumbel top-k with the same noise rows as ``joint_select(..., seed=s)``
(the listing's ``np.random.choice(p=softmax(logits))`` samples the same distribution), so all
three must return the same indices; the ``agree`` column checks it.

The score matrix is the learnability of two synthetic contrastive models (sigmoid loss matrices
of unit-norm embeddings), as in training. All timings are measured side by side in one process,
interleaved, best of ``--repeats``.

Run ``python bench/select_matrix.py`` (about a minute) or ``--quick`` (seconds). Prints a table
and writes ``bench/results/select_matrix.json``. Target (issue 2): ``joint_select`` >= 20x faster
than the literal Algorithm 1 at N = 8192.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c

import jestcore

TARGET_N = 8192
TARGET_SPEEDUP = 20.0


def gumbel_top_k(logits: np.ndarray, g: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` largest perturbed logits, descending, ties to the lower index."""
    return np.argsort(-(logits + g.astype(logits.dtype)), kind="stable")[:k]


def literal_algorithm1(
    scores: np.ndarray, n_select: int, n_chunks: int, noise: np.ndarray, *, as_printed: bool
) -> np.ndarray:
    """The paper's listing of joint sampling, with Gumbel top-k draws from explicit ``noise``.

    ``as_printed=True`` builds the mask as the listing does, ``np.eye(n)[inds].sum(axis=0)``
    (float64); otherwise the mask is a vector of ``scores.dtype``.
    """
    n = scores.shape[0]
    sizes = jestcore.chunk_sizes(n_select, n_chunks)
    logits_ii = np.diag(scores)
    inds = gumbel_top_k(logits_ii, noise[0], sizes[0])
    for k in range(1, len(sizes)):
        if as_printed:
            is_sampled = np.eye(n)[inds].sum(axis=0)
        else:
            is_sampled = np.zeros(n, dtype=scores.dtype)
            is_sampled[inds] = 1
        logits_ij = np.sum(scores * is_sampled.reshape(n, 1), axis=0)
        logits_ji = np.sum(scores * is_sampled.reshape(1, n), axis=1)
        logits = logits_ii + logits_ij + logits_ji
        logits = logits - is_sampled * 1e8
        inds = np.concatenate((inds, gumbel_top_k(logits, noise[k], sizes[k])))
    return inds


def learnability_matrix(n: int, d: int, seed: int) -> np.ndarray:
    """A float32 learnability score matrix of two synthetic contrastive models."""
    rng = np.random.default_rng(seed)

    def model(scale: float, bias: float, noise: float) -> np.ndarray:
        base = rng.standard_normal((n, d), dtype=np.float32)
        image = base + noise * rng.standard_normal((n, d), dtype=np.float32)
        text = base + noise * rng.standard_normal((n, d), dtype=np.float32)
        for x in (image, text):
            x /= np.linalg.norm(x, axis=1, keepdims=True)
        return jestcore.sigmoid_loss_matrix(image, text, scale=scale, bias=bias)

    learner = model(10.0, -10.0, 1.5)
    reference = model(10.0, -10.0, 0.5)
    return jestcore.learnability(learner, reference).astype(np.float32, copy=False)


def measure(n: int, args: argparse.Namespace) -> dict[str, Any]:
    n_select = round(n * (1 - args.filter_ratio))
    scores = learnability_matrix(n, args.dim, args.seed)
    noise = jestcore.gumbel_noise(args.seed, (args.chunks, n), xp=np)
    methods = {
        # gain=1.0: Algorithm 1 as printed, so that the literal agrees (the gain costs nothing)
        "joint": lambda: jestcore.joint_select(
            scores, n_select, n_chunks=args.chunks, seed=args.seed, gain=1.0
        ),
        "literal": lambda: literal_algorithm1(
            scores, n_select, args.chunks, noise, as_printed=False
        ),
    }
    if not args.no_paper_listing:
        methods["paper_listing"] = lambda: literal_algorithm1(
            scores, n_select, args.chunks, noise, as_printed=True
        )
    best = dict.fromkeys(methods, float("inf"))
    results: dict[str, np.ndarray] = {}
    for _ in range(args.repeats):  # interleaved, so load changes hit every method alike
        for name, fn in methods.items():
            start = time.perf_counter()
            results[name] = fn()
            best[name] = min(best[name], time.perf_counter() - start)
    agree = all(np.array_equal(results["joint"], r) for r in results.values())
    row: dict[str, Any] = {"N": n, "n_select": n_select, "n_chunks": args.chunks}
    row.update({f"{name}_seconds": round(t, 5) for name, t in best.items()})
    row["speedup"] = round(best["literal"] / best["joint"], 2)
    if "paper_listing" in best:
        row["speedup_vs_paper_listing"] = round(best["paper_listing"] / best["joint"], 2)
    row["agree"] = agree
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[2048, TARGET_N], help="values of N")
    p.add_argument("--filter-ratio", type=float, default=0.8, help="f; n_select = (1 - f) N")
    p.add_argument("--chunks", type=int, default=16, help="n_chunks")
    p.add_argument("--dim", type=int, default=64, help="embedding width of the synthetic models")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats (best is reported)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-paper-listing", action="store_true", help="skip the as-printed listing")
    p.add_argument("--quick", action="store_true", help="tiny sizes, one repeat (a smoke run)")
    p.add_argument("--out", type=Path, default=None, help="JSON output path")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.repeats, args.dim = [128, 256], 1, 16
    out = args.out or (
        Path(tempfile.gettempdir()) / "jestcore-bench" / "select_matrix.json"
        if args.quick
        else c.RESULTS / "select_matrix.json"
    )
    env = c.environment()
    rows = []
    for n in args.sizes:
        rows.append(measure(n, args))
        print(f"N = {n}: done", file=sys.stderr, flush=True)
    columns = [k for k in rows[0] if k not in ("n_chunks",)]
    print(c.table(rows, columns))
    summary: dict[str, Any] = {}
    at_target = [r for r in rows if r["N"] == TARGET_N]
    if at_target:
        r = at_target[0]
        summary = {
            "target": f"joint_select >= {TARGET_SPEEDUP:g}x faster than literal at N = {TARGET_N}",
            "speedup": r["speedup"],
            "met": bool(r["speedup"] >= TARGET_SPEEDUP),
        }
        if "speedup_vs_paper_listing" in r:
            summary["speedup_vs_paper_listing"] = r["speedup_vs_paper_listing"]
        print(
            f"\nN = {TARGET_N}: joint_select is {r['speedup']}x faster than the literal "
            f"Algorithm 1 (target >= {TARGET_SPEEDUP:g}x: {'met' if summary['met'] else 'NOT met'})"
        )
    c.write_json(
        out,
        {
            "title": "joint_select on a given N x N matrix vs the literal Algorithm 1",
            "description": (
                "Seconds (best of repeats, interleaved in one process) of jestcore.joint_select "
                "and of the paper's listing on the same float32 learnability matrix, f = "
                f"{args.filter_ratio}, {args.chunks} chunks, NumPy."
            ),
            "command": env["command"],
            "environment": env,
            "summary": summary,
            "results": rows,
        },
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
