"""Streaming joint selection on a GPU: (a) ``joint_select_embeddings`` and (d) its floor.

For each GPU framework present (PyTorch with CUDA, JAX with a GPU), in a fresh child process,
this times at N = 16384 and 65536 (f = 0.8) and at paper scale (N = 163,840, b = 32,768), d = 256,
16 chunks:

* (a) ``jestcore.joint_select_embeddings`` (learnability, seeded);
* (d) the floor: the four ``(c x d) @ (d x N)`` products per chunk and the column sums of their
  softplus alone, with the backend's ``sum_softplus`` and no selection logic;

best of ``--repeats`` after a warm-up (JAX: after ``jax.jit`` compilation, timed separately), with
the peak device memory. Products are float32 (TF32 off in PyTorch, ``"highest"`` matmul
precision in JAX), as on the CPU, so both frameworks select the same indices as NumPy up to
floating-point near-ties; ``overlap`` is the fraction of the PyTorch selection (else the first
run's) that each run shares at that size.

Without a GPU it says so and exits with status 0. ``--device cpu`` runs the same measurements on
the CPU (with ``--quick``, a smoke run of this script on any machine).

Run ``python bench/gpu_select.py`` (a minute or two on one H200). Prints a table and writes
``bench/results/gpu_select.json``.
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
import select_embeddings as se

SCRIPT = Path(__file__).resolve()
FRAMEWORKS = ("torch", "jax")


def _torch_device(kind: str) -> tuple[Any, str | None]:
    """The torch device to use, or ``None`` and why not."""
    import torch

    if kind == "cpu":
        return torch.device("cpu"), None
    if not torch.cuda.is_available():
        why = (
            f"torch {torch.__version__}: no CUDA device (torch.version.cuda = {torch.version.cuda})"
        )
        return None, why
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 products, as on the CPU
    return torch.device("cuda"), None


def _jax_device(kind: str) -> tuple[Any, str | None]:
    import jax

    if kind == "cpu":
        return jax.devices("cpu")[0], None
    try:
        gpus = jax.devices("gpu")
    except RuntimeError as e:
        return None, f"jax {jax.__version__}: no GPU backend ({str(e).splitlines()[0]})"
    jax.config.update("jax_default_matmul_precision", "highest")  # float32, not TF32
    return gpus[0], None


def run_framework(spec: dict[str, Any]) -> dict[str, Any]:
    """Child process: every (N, method) measurement of one framework on one device."""
    fw, kind = spec["framework"], spec["device"]
    if fw == "jax":
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        if kind == "cpu":
            os.environ.setdefault("JAX_PLATFORMS", "cpu")
    try:
        device, why_not = (_torch_device if fw == "torch" else _jax_device)(kind)
    except ModuleNotFoundError as e:
        return {"available": False, "reason": f"{e.name} is not installed"}
    if device is None:
        return {"available": False, "reason": why_not}
    import array_api_compat
    import numpy as np
    from jestcore.backends import get_backend

    import jestcore

    out: dict[str, Any] = {"available": True, "device_name": _device_name(fw, device), "runs": []}
    for n, n_select in spec["sizes"]:
        arrays = se._to_framework(se._embeddings(n, spec["d"], spec["seed"]), fw, device)
        xp = array_api_compat.array_namespace(arrays["learner.image"])
        scale, bias = spec["scale"], spec["bias"]
        learner = jestcore.PairEmbeddings(
            arrays["learner.image"], arrays["learner.text"], scale, bias
        )
        reference = jestcore.PairEmbeddings(
            arrays["reference.image"], arrays["reference.text"], scale, bias
        )
        models = [
            (arrays["learner.image"], arrays["learner.text"], scale, bias, 1),
            (arrays["reference.image"], arrays["reference.text"], scale, bias, -1),
        ]
        sizes = jestcore.chunk_sizes(n_select, spec["n_chunks"])

        def stream(learner: Any, reference: Any, seed: Any, n_select: int = n_select) -> Any:
            return jestcore.joint_select_embeddings(
                learner, reference, n_select, n_chunks=spec["n_chunks"], seed=seed
            )

        def floor(models: list[tuple[Any, ...]], xp: Any = xp, sizes: Any = sizes) -> Any:
            return se._floor(xp, get_backend(xp), models, sizes)

        for method, fn, args in (
            ("a", stream, (learner, reference, spec["seed"])),
            ("d", floor, (models,)),
        ):
            row: dict[str, Any] = {"N": n, "n_select": n_select, "label": method}
            row["method"] = se.METHODS[method]
            _reset_peak(fw, device)
            if fw == "jax":
                import jax
                import jax.numpy as jnp

                if method == "a":
                    args = (learner, reference, jnp.asarray(spec["seed"], dtype=jnp.uint32))
                start = time.perf_counter()
                fn = jax.jit(fn).lower(*args).compile()
                row["compile_seconds"] = round(time.perf_counter() - start, 4)
            sync = _sync(fw, device)
            sync(fn(*args))  # warm-up
            seconds, _, result = c.best_of(lambda: fn(*args), spec["repeats"], sync)  # noqa: B023
            row["seconds"] = round(seconds, 6)
            row["peak_device_mib"] = _peak_mib(fw, device)
            if method == "a":
                row["indices"] = np.asarray(_to_host(fw, result)).astype(np.int64).tolist()
            out["runs"].append(row)
            print(f"{fw} ({method}) N = {n}: {seconds:.4g} s", file=sys.stderr, flush=True)
        del arrays, learner, reference, models
    return out


def _device_name(fw: str, device: Any) -> str:
    if fw == "torch":
        import torch

        return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return str(getattr(device, "device_kind", device))


def _sync(fw: str, device: Any) -> Any:
    if fw == "torch":
        import torch

        def sync_torch(r: Any) -> Any:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            return r

        return sync_torch
    import jax

    return jax.block_until_ready


def _to_host(fw: str, x: Any) -> Any:
    return x.cpu().numpy() if fw == "torch" else x


def _reset_peak(fw: str, device: Any) -> None:
    if fw == "torch" and device.type == "cuda":
        import torch

        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(fw: str, device: Any) -> float | None:
    """Peak device memory in MiB (PyTorch: since the last reset; JAX: of the process so far)."""
    if fw == "torch":
        import torch

        if device.type != "cuda":
            return None
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if not stats or "peak_bytes_in_use" not in stats:
        return None
    return round(stats["peak_bytes_in_use"] / 2**20, 1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[16384, 65536], help="values of N")
    p.add_argument("--filter-ratio", type=float, default=0.8)
    p.add_argument("--paper-n", type=int, default=163840)
    p.add_argument("--paper-b", type=int, default=32768)
    p.add_argument("--no-paper", action="store_true", help="skip the paper-scale size")
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--chunks", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=float, default=10.0)
    p.add_argument("--bias", type=float, default=-10.0)
    p.add_argument("--frameworks", nargs="+", choices=FRAMEWORKS, default=list(FRAMEWORKS))
    p.add_argument("--device", choices=("gpu", "cpu"), default="gpu")
    p.add_argument("--timeout", type=float, default=600.0, help="per framework, seconds")
    args = c.parse_args(p, argv, run_framework, quick="tiny sizes (a smoke run)")
    if args is None:
        return 0
    if args.quick:
        args.sizes, args.dim, args.paper_n, args.paper_b, args.repeats = [256], 16, 1024, 256, 1
    sizes = [(n, round(n * (1 - args.filter_ratio))) for n in args.sizes]
    if not args.no_paper:
        sizes.append((args.paper_n, args.paper_b))
    out = args.out or (
        Path(tempfile.gettempdir()) / "jestcore-bench" / "gpu_select.json"
        if args.quick or args.device == "cpu"
        else c.RESULTS / "gpu_select.json"
    )
    env = c.environment()
    results: dict[str, dict[str, Any]] = {}
    for fw in args.frameworks:
        spec = {
            "framework": fw,
            "device": args.device,
            "sizes": sizes,
            "d": args.dim,
            "n_chunks": args.chunks,
            "seed": args.seed,
            "scale": args.scale,
            "bias": args.bias,
            "repeats": args.repeats,
        }
        results[fw] = c.run_child(SCRIPT, spec, timeout=args.timeout)
    present = {fw: r for fw, r in results.items() if r.get("available")}
    if not present:
        print(f"No {args.device.upper()} available to any framework; nothing measured:")
        for fw, r in results.items():
            print(f"  {fw}: {r.get('reason') or r.get('error')}")
        return 0
    rows = []
    for fw, r in results.items():
        if not r.get("available"):
            print(f"{fw}: skipped: {r.get('reason') or r.get('error')}")
            continue
        for row in r["runs"]:
            rows.append({"framework": fw, "device_name": r["device_name"], **row})
    for row in rows:
        same_n = [x for x in rows if x["N"] == row["N"] and x.get("indices")]
        ref = next((x for x in same_n if x["framework"] == "torch"), same_n[0] if same_n else None)
        row["overlap"] = se._overlap(ref and ref["indices"], row.get("indices"))
        floor = next(
            (
                x["seconds"]
                for x in rows
                if x["framework"] == row["framework"] and x["N"] == row["N"] and x["label"] == "d"
            ),
            None,
        )
        if row["label"] == "a" and floor:
            row["x_floor"] = round(row["seconds"] / floor, 3)
    for row in rows:
        row.pop("indices", None)
    columns = [
        "framework", "label", "method", "N", "n_select", "seconds", "compile_seconds",
        "peak_device_mib", "x_floor", "overlap",
    ]  # fmt: skip
    print(c.table(rows, columns))
    c.write_json(
        out,
        {
            "title": f"Streaming joint selection on a {args.device.upper()}",
            "description": (
                "Seconds (best of repeats after warm-up) and peak device memory of (a) "
                "joint_select_embeddings and (d) its products and softplus sums alone; "
                f"d = {args.dim}, {args.chunks} chunks, float32."
            ),
            "command": env["command"],
            "environment": {
                **env,
                "devices": {fw: r.get("device_name") for fw, r in present.items()},
            },
            "results": rows,
        },
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
