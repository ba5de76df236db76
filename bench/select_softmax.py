"""Streaming joint selection under the softmax (CLIP) loss vs the sigmoid loss, and vs recomputing.

For a super-batch of N image-text pairs (d = 256, f = 0.8, 16 chunks, learnability) this times,
on NumPy, PyTorch (CPU) and JAX (CPU, ``jax.jit`` with ``loss`` static), each measurement in a
fresh child process that also reports its peak resident set size:

* ``sigmoid``: ``jestcore.joint_select_embeddings(..., loss="sigmoid")``;
* ``softmax``: ``jestcore.joint_select_embeddings(..., loss="softmax")``, the paper's
  Algorithm 3 streamed (a running log-sum-exp per candidate, model and direction);
* ``recompute`` (N <= 4096 by default): the approach of DRRho-CLIP's public port of Algorithm 3
  (``jointly_sample_batch_softmax`` in its ``open_clip_train/train.py``), re-implemented here
  from its description, not copied: every chunk rebuilds a one-hot ``N x N`` identity to mark
  the selected items, recomputes each model's three ``N x N`` logit matrices (the pairs', image
  to every text, text to every image) and their masked log-sum-exps in both directions. The
  port's sampling (a multinomial on the shifted chunk-0 logits, on ``exp(logits)`` later) is
  replaced by the same Gumbel top-k and noise as jestcore's, so that the selections can be
  compared: it costs nothing next to the ``N x N`` work.

``same`` says whether a softmax run selected exactly the indices of NumPy's softmax stream
(same seed; ``overlap`` is the fraction shared).
The target (issue 14): the softmax stream within 1.3x of the sigmoid stream's time and peak RSS
on each backend at N = 16,384.

Run ``python bench/select_softmax.py`` (a few minutes on 2 cores) or ``--quick`` (a smoke run).
Prints a table and writes ``bench/results/select_softmax.json``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c
import select_embeddings as se

SCRIPT = Path(__file__).resolve()
FRAMEWORKS = ("numpy", "torch", "jax")
METHODS = ("sigmoid", "softmax", "recompute")

# --------------------------------------------------------------------------------------------
# Child side: one measurement per process.


def _logsumexp_rows(xp: Any, x: Any) -> Any:
    """Row-wise log-sum-exp of a 2-D array, max-shifted."""
    top = xp.max(x, axis=1, keepdims=True)
    return xp.reshape(top, (-1,)) + xp.log(xp.sum(xp.exp(x - top), axis=1))


def _recompute_nll(xp: Any, image: Any, text: Any, scale: float, is_sampled: Any) -> Any:
    """One model's ``(u, neg)`` the way the DRRho-CLIP port computes them, every call.

    The pairs' logit matrix (for its diagonal), the image-to-text and text-to-image logit
    matrices (all ``N x N``), the latter two masked to the selected items by subtracting 1e8
    elsewhere, and their row log-sum-exps.
    """
    pairs = scale * (image @ xp.matrix_transpose(text))
    image_to_text = scale * (image @ xp.matrix_transpose(text))
    text_to_image = scale * (text @ xp.matrix_transpose(image))
    if is_sampled is not None:
        mask = xp.reshape((1.0 - is_sampled) * 1e8, (1, -1))
        image_to_text = image_to_text - mask
        text_to_image = text_to_image - mask
    neg = 0.5 * (_logsumexp_rows(xp, image_to_text) + _logsumexp_rows(xp, text_to_image))
    n = pairs.shape[0]
    u = -xp.take(xp.reshape(pairs, (-1,)), xp.arange(n, device=_device(pairs)) * (n + 1))
    return u, neg


def _device(x: Any) -> Any:
    return getattr(x, "device", None)


def _recompute(xp: Any, m: dict[str, Any], scale: float, n_select: int, n_chunks: int, seed: Any):
    """Joint selection under the softmax loss, recomputing the ``N x N`` matrices every chunk."""
    import jestcore

    n = m["learner.image"].shape[0]
    sizes = jestcore.chunk_sizes(n_select, n_chunks)
    device = _device(m["learner.image"])
    noise = jestcore.gumbel_noise(seed, (n_chunks, n), xp=xp, device=device)

    def terms(is_sampled: Any) -> tuple[Any, Any]:
        """Learnability's ``(u^l - u^r, neg^l - neg^r)``, both models recomputed in full."""
        u_l, neg_l = _recompute_nll(xp, m["learner.image"], m["learner.text"], scale, is_sampled)
        u_r, neg_r = _recompute_nll(
            xp, m["reference.image"], m["reference.text"], scale, is_sampled
        )
        return u_l - u_r, neg_l - neg_r

    def top(values: Any, k: int) -> Any:
        return xp.argsort(-(values + noise[k, ...]), stable=True)[: sizes[k]]

    # chunk 0: the diagonal terms (the port computes the unmasked negatives too, unused)
    u, _ = terms(None)
    inds = top(u, 0)
    for k in range(1, len(sizes)):
        eye = xp.eye(n, dtype=m["learner.image"].dtype, device=device)  # one-hot rows, N x N
        is_sampled = xp.sum(xp.take(eye, inds, axis=0), axis=0)
        _, neg = terms(is_sampled)
        inds = xp.concat((inds, top(u + neg - is_sampled * 1e8, k)))
    return inds


def run_measurement(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs one (framework, method, N) measurement; called in the child process."""
    fw, method = spec["framework"], spec["method"]
    arrays, xp = se.child_inputs(spec)
    import numpy as np

    import jestcore

    scale, bias = spec["scale"], spec["bias"]
    n_select, n_chunks, seed = spec["n_select"], spec["n_chunks"], spec["seed"]
    learner = jestcore.PairEmbeddings(arrays["learner.image"], arrays["learner.text"], scale, bias)
    reference = jestcore.PairEmbeddings(
        arrays["reference.image"], arrays["reference.text"], scale, bias
    )

    def stream(learner: Any, reference: Any, seed: Any, loss: str = method) -> Any:
        # gain 1: Algorithm 3 as printed, which the recomputing port samples (same time as 100)
        return jestcore.joint_select_embeddings(
            learner, reference, n_select, n_chunks=n_chunks, seed=seed, loss=loss, gain=1.0
        )

    def recompute(m: dict[str, Any], seed: Any) -> Any:
        return _recompute(xp, m, scale, n_select, n_chunks, seed)

    fn: Any = recompute if method == "recompute" else stream
    fn_args: tuple[Any, ...] = (
        (arrays, seed) if method == "recompute" else (learner, reference, seed)
    )
    result: dict[str, Any] = {"rss_after_setup_mib": round(c.current_rss_mib(), 1)}
    if fw == "torch":
        import torch

        result["threads"] = torch.get_num_threads()
    sync: Any = lambda r: r  # noqa: E731
    if fw == "jax":
        import jax
        import jax.numpy as jnp

        fn_args = (*fn_args[:-1], jnp.asarray(seed, dtype=jnp.uint32))
        start = time.perf_counter()
        compiled = jax.jit(fn).lower(*fn_args).compile()
        result["compile_seconds"] = round(time.perf_counter() - start, 4)
        memory = compiled.memory_analysis()
        if memory is not None:
            result["xla_temp_mib"] = round(memory.temp_size_in_bytes / 2**20, 1)
        fn = compiled

        def sync(r: Any) -> Any:
            return jax.block_until_ready(r)

    else:  # imports and first-call set-up at a tiny size
        small = se._to_framework(se._embeddings(64, 8, 1), fw)
        jestcore.joint_select_embeddings(
            jestcore.PairEmbeddings(small["learner.image"], small["learner.text"], scale, bias),
            jestcore.PairEmbeddings(small["reference.image"], small["reference.text"], scale, bias),
            8,
            n_chunks=4,
            seed=0,
            loss="softmax" if method == "recompute" else method,
        )
    seconds, cpu_seconds, out = c.best_of(lambda: fn(*fn_args), spec["repeats"], sync)
    result["seconds"] = round(seconds, 5)
    result["cpu_seconds"] = round(cpu_seconds, 5)
    result["indices"] = np.asarray(out).astype(np.int64).tolist()
    return result


# --------------------------------------------------------------------------------------------
# Parent side: plan, run, report.


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
        "repeats": 1 if method == "recompute" else args.repeats,
        "torch_threads": args.torch_threads,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[16384])
    p.add_argument("--recompute-sizes", type=int, nargs="*", default=[4096])
    p.add_argument("--recompute-frameworks", nargs="*", choices=FRAMEWORKS, default=["torch"])
    p.add_argument("--dim", type=int, default=256, help="embedding width d")
    p.add_argument("--filter-ratio", type=float, default=0.8)
    p.add_argument("--chunks", type=int, default=16)
    p.add_argument("--frameworks", nargs="+", choices=FRAMEWORKS, default=list(FRAMEWORKS))
    p.add_argument("--scale", type=float, default=100.0, help="temperature of both models")
    p.add_argument("--bias", type=float, default=-10.0, help="sigmoid-loss bias")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--torch-threads", type=int, default=None, help="default: torch's own")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats of a stream (best)")
    p.add_argument("--timeout", type=float, default=1800.0, help="per child process, seconds")
    args = c.parse_args(p, argv, run_measurement, quick="tiny sizes (a smoke run)")
    if args is None:
        return 0
    if args.quick:
        args.sizes, args.recompute_sizes, args.dim, args.repeats = [512], [256], 16, 1
    out = args.out or (
        Path(tempfile.gettempdir()) / "jestcore-bench" / "select_softmax.json"
        if args.quick
        else c.RESULTS / "select_softmax.json"
    )
    env = c.environment()
    plan = [(n, fw, m) for n in args.sizes for fw in args.frameworks for m in METHODS[:2]]
    plan += [(n, fw, "recompute") for n in args.recompute_sizes for fw in args.recompute_frameworks]
    rows: list[dict[str, Any]] = []
    done: dict[tuple[str, str, int], dict[str, Any]] = {}
    for n, fw, method in plan:
        n_select = round(n * (1 - args.filter_ratio))
        row: dict[str, Any] = {"framework": fw, "method": method, "N": n, "n_select": n_select}
        print(f"run  {fw} {method} N = {n} ...", file=sys.stderr, end=" ", flush=True)
        result = c.run_child(SCRIPT, _spec(fw, method, n, n_select, args), timeout=args.timeout)
        print(result.get("seconds", result.get("error")), file=sys.stderr, flush=True)
        row.update(result)
        done[(fw, method, n)] = row
        rows.append(row)
    missing = [(n, "numpy", "softmax") for n in args.recompute_sizes if n not in args.sizes]
    for n, fw, method in missing:  # the reference selection for `same`, not reported as a row
        spec = _spec(fw, method, n, round(n * (1 - args.filter_ratio)), args)
        done[(fw, method, n)] = c.run_child(SCRIPT, {**spec, "repeats": 1}, timeout=args.timeout)
    for row in rows:  # agreement with NumPy's softmax stream (sigmoid selects otherwise)
        ref = done.get(("numpy", "softmax", row["N"]), {}).get("indices")
        got = row.get("indices") if row["method"] != "sigmoid" else None
        row["same"] = None if ref is None or got is None else ref == got
        if got is not None and ref is not None:
            row["overlap"] = round(len(set(ref) & set(got)) / len(ref), 4)
    for row in rows:
        row.pop("indices", None)
        sigmoid = done.get((row["framework"], "sigmoid", row["N"]), {})
        if row["method"] == "softmax" and sigmoid.get("seconds") and row.get("seconds"):
            row["x_sigmoid_time"] = round(row["seconds"] / sigmoid["seconds"], 3)
            row["x_sigmoid_cpu"] = round(row["cpu_seconds"] / sigmoid["cpu_seconds"], 3)
            row["x_sigmoid_rss"] = round(row["peak_rss_mib"] / sigmoid["peak_rss_mib"], 3)
    for row in rows:
        if row["method"] != "recompute" or not row.get("seconds"):
            continue
        stream = done.get((row["framework"], "softmax", row["N"]), {})
        if not stream.get("seconds"):
            spec = _spec(row["framework"], "softmax", row["N"], row["n_select"], args)
            stream = c.run_child(SCRIPT, spec, timeout=args.timeout)
            stream.pop("indices", None)
            row["softmax_stream_same_n"] = {
                k: stream.get(k) for k in ("seconds", "cpu_seconds", "peak_rss_mib")
            }
        if stream.get("seconds"):
            row["x_softmax_stream_time"] = round(row["seconds"] / stream["seconds"], 1)
            row["x_softmax_stream_rss"] = round(row["peak_rss_mib"] / stream["peak_rss_mib"], 2)
    columns = [
        "framework", "method", "N", "seconds", "cpu_seconds", "compile_seconds", "peak_rss_mib",
        "x_sigmoid_time", "x_sigmoid_cpu", "x_sigmoid_rss", "x_softmax_stream_time",
        "x_softmax_stream_rss", "same",
    ]  # fmt: skip
    print(c.table(rows, columns))
    for row in rows:
        if row.get("error"):
            print(f"  {row['framework']} {row['method']} N = {row['N']}: {row['error']}")
    c.write_json(
        out,
        {
            "title": "Joint selection from embeddings: softmax (Algorithm 3) vs sigmoid streaming",
            "description": (
                f"Best-of-{args.repeats} seconds, CPU seconds and peak RSS (fresh process each) of "
                "joint_select_embeddings with loss='sigmoid' and loss='softmax' (learnability), "
                "and of recomputing the N x N softmax every chunk (DRRho-CLIP's approach, "
                f"timed once); d = {args.dim}, f = {args.filter_ratio}, {args.chunks} chunks, "
                f"scale {args.scale}, CPU. x_sigmoid_*: softmax / sigmoid on the same backend; "
                "x_softmax_stream_*: recompute / softmax stream."
            ),
            "command": env["command"],
            "environment": env,
            "results": rows,
        },
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
