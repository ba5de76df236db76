"""Peak memory and compile time of jitted JAX joint selection from embeddings.

Each measurement runs in a fresh child process (peak RSS from ``resource.getrusage``):

* ``rss``: a jitted ``joint_select_embeddings`` (learnability, d = 256, f = 0.8, 16 chunks,
  default ``block_size``) at ``--rss-n`` (default N = 65,536 and the paper's 163,840), with
  the inputs drawn by ``jax.random`` (4 embedding matrices, ``4 * N * d * 4`` bytes); the child
  reports its peak RSS, its RSS once the inputs exist (``inputs_rss_mib``) and the run time.
* ``compile``: the time to lower and compile the same selection at N = 4096 for n_chunks in
  {4, 16, 64} and block_size in {1, 64, default}.

``--api spec`` jits ``jestcore.joint_select_embeddings`` (static ``n_select``, ``n_chunks``,
``score``, ``block_size``); ``--api adapter`` calls
``jestcore.adapters.jax.joint_select_embeddings`` (which compiles on its own). ``--root DIR``
imports jestcore from ``DIR`` instead of the installed tree (a package directory laid out as
installed: ``DIR/jestcore/{backends,adapters}``), e.g. an older commit for a before/after
comparison.

Run ``python bench/jax_select.py [--quick] [--only rss|compile] [--api ...] [--root DIR]
[--tag NAME]``; writes ``bench/results/jax_select[_TAG].json``. Never asserts on time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c

SCRIPT = Path(__file__).resolve()
D = 256
FILTER_RATIO = 0.8


def _import(root: str | None) -> Any:
    """``jestcore``, from ``root`` when given (bypassing the editable install)."""
    if root:
        sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f)]
        sys.path.insert(0, root)
    import jestcore

    return jestcore


def _select_fn(api: str) -> Any:
    import jax

    if api == "adapter":
        import jestcore.adapters.jax as jj

        return jj.joint_select_embeddings
    import jestcore

    static = ("n_select", "n_chunks", "score", "block_size")
    return jax.jit(jestcore.joint_select_embeddings, static_argnames=static)


def _models(n: int, d: int) -> tuple[Any, Any]:
    import jax
    import jax.numpy as jnp

    from jestcore import PairEmbeddings

    keys = jax.random.split(jax.random.key(0), 4)

    def unit(k: Any) -> Any:
        x = jax.random.normal(k, (n, d), dtype=jnp.float32)
        return x / jnp.linalg.norm(x, axis=1, keepdims=True)

    learner = PairEmbeddings(unit(keys[0]), unit(keys[1]), 10.0, -5.0)
    reference = PairEmbeddings(unit(keys[2]), unit(keys[3]), 10.0, -5.0)
    return learner, reference


def _n_select(n: int) -> int:
    return max(1, int(n * (1 - FILTER_RATIO) + 0.5))


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """One measurement (runs in the child process)."""
    _import(spec.get("root"))
    import jax

    select = _select_fn(spec["api"])
    n = spec["n"]
    learner, reference = _models(n, D)
    jax.block_until_ready((learner, reference))
    out: dict[str, Any] = {"inputs_rss_mib": round(c.current_rss_mib(), 1)}
    kwargs = dict(n_chunks=spec["n_chunks"], score="learnability", seed=0)
    if spec.get("block_size") is not None:
        kwargs["block_size"] = spec["block_size"]
    if spec["kind"] == "compile":
        import jestcore

        static = ("n_select", "n_chunks", "score", "block_size")
        fn = jax.jit(jestcore.joint_select_embeddings, static_argnames=static)
        if spec["api"] == "adapter":
            fn = jax.jit(select, static_argnames=static)
        start = time.perf_counter()
        fn.lower(learner, reference, _n_select(n), **kwargs).compile()
        out["compile_seconds"] = round(time.perf_counter() - start, 3)
        return out
    start = time.perf_counter()
    idx = jax.block_until_ready(select(learner, reference, _n_select(n), **kwargs))
    out["first_call_seconds"] = round(time.perf_counter() - start, 3)
    start, cpu = time.perf_counter(), time.process_time()
    idx = jax.block_until_ready(select(learner, reference, _n_select(n), **kwargs))
    out["run_seconds"] = round(time.perf_counter() - start, 3)
    out["run_cpu_seconds"] = round(time.process_time() - cpu, 3)
    out["n_selected"] = int(idx.shape[0])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    parser.add_argument("--only", choices=("rss", "compile"))
    parser.add_argument("--api", choices=("spec", "adapter"), default="spec")
    parser.add_argument("--root", help="import jestcore from this directory")
    parser.add_argument("--tag", default="", help="suffix of the JSON file name")
    parser.add_argument("--rss-n", type=int, nargs="+", default=[65536, 163840])
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--out", type=Path, help="output JSON path")
    args = parser.parse_args()
    if args.child:
        c.child_main(args.child, child)
        return
    base = {"api": args.api, "root": args.root}
    runs: list[dict[str, Any]] = []
    if args.only in (None, "rss"):
        for n in [1024] if args.quick else args.rss_n:
            runs.append({**base, "kind": "rss", "n": n, "n_chunks": 16})
    if args.only in (None, "compile"):
        n = 256 if args.quick else 4096
        for n_chunks in (4, 16) if args.quick else (4, 16, 64):
            for block_size in (1, 64, None):
                runs.append(
                    {
                        **base,
                        "kind": "compile",
                        "n": n,
                        "n_chunks": n_chunks,
                        "block_size": block_size,
                    }
                )
    rows = []
    for spec in runs:
        result = c.run_child(SCRIPT, spec, timeout=args.timeout)
        rows.append({**spec, **result})
        print(c.table([rows[-1]], [k for k in rows[-1] if k not in ("root",)]), flush=True)
    name = f"jax_select{'_' + args.tag if args.tag else ''}.json"
    out = args.out or (c.RESULTS / name if not args.quick else Path(c.tempfile.gettempdir()) / name)
    c.write_json(out, {"environment": c.environment(), "runs": rows})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
