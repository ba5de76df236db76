"""Checks and times the PyTorch backend on a GPU: equivalence with NumPy, compile, speed.

Run ``python bench/gpu_torch_check.py`` on a machine with CUDA (one call of a few minutes). It

1. selects on CUDA and on NumPy with the same seeds (matrix, embedding and independent paths)
   and checks the indices agree, tolerating only genuine floating near-ties;
2. checks that the generator's Gumbel noise is the same on CUDA, compiled and eager;
3. checks ``torch.compile(fullgraph=True)`` selection against eager on CUDA;
4. times the native primitives against the pure array-API fallbacks (``top_k`` against a stable
   sort, ``softplus`` against the generic formula) and whole selections.

It prints a table and writes ``bench/results/torch_check_cuda.json``. Without CUDA it says so and
exits with status 0; ``--device cpu`` runs the same checks and timings on the CPU instead.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Any, device: Any, *, repeat: int = 5, min_time: float = 0.05) -> float:
    """Best-of-``repeat`` seconds per call of ``fn()`` (after one warm-up call).

    The best, not the median: on a shared machine other work only ever adds time.
    """
    fn()
    _sync(device)
    times = []
    for _ in range(repeat):
        calls, start = 0, time.perf_counter()
        while True:
            fn()
            calls += 1
            _sync(device)
            elapsed = time.perf_counter() - start
            if elapsed >= min_time:
                break
        times.append(elapsed / calls)
    return float(np.min(times))


def _near_tie_equal(a: np.ndarray, e: np.ndarray, logits_of: Any, sizes: list[int]) -> str:
    """'equal', 'near-tie at p' or raises: the same comparison as the tests' helper."""
    if np.array_equal(a, e):
        return "equal"
    p = int(np.flatnonzero(a != e)[0])
    bounds = np.cumsum([0, *sizes])
    k = int(np.searchsorted(bounds, p, side="right") - 1)
    values, mags = logits_of(e[: bounds[k]], k)
    gap = abs(values[a[p]] - values[e[p]])
    tol = 2e-5 * max(mags[a[p]], mags[e[p]])
    if not gap <= tol:
        raise AssertionError(f"selections differ at {p}: gap {gap:.3g} > near-tie tol {tol:.3g}")
    return f"near-tie at {p}"


def _dense(image: np.ndarray, text: np.ndarray, scale: float, bias: float) -> np.ndarray:
    logits = scale * (image @ text.T) + bias
    z = np.where(np.eye(len(image), dtype=bool), -logits, logits)
    return np.logaddexp(0.0, z)


def check_equivalence(device: Any, rng: np.random.Generator) -> list[dict[str, Any]]:
    """Same seed, same indices as NumPy, for the three selection paths."""
    import torch

    import jestcore

    rows = []
    for n, b, chunks in ((256, 64, 8), (2048, 256, 16)):
        d = 32
        li, lt, ri, rt = (rng.standard_normal((n, d)) / np.sqrt(d) for _ in range(4))
        learner = (li, lt, 10.0, -5.0)
        reference = (ri, rt, 10.0, -5.0)
        s = _dense(*learner) - _dense(*reference)
        mags = (
            np.abs(_dense(*learner))
            + np.abs(_dense(*reference))
            + 10 * (np.abs(li) @ np.abs(lt).T + np.abs(ri) @ np.abs(rt).T)
        )
        sizes = list(jestcore.chunk_sizes(b, chunks))
        for seed in (0, 1, 2):
            noise = jestcore.gumbel_noise(seed, (chunks, n), xp=np).astype(np.float64)

            def logits_of(before: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
                v = np.diag(s) + s[before].sum(0) + s[:, before].sum(1) + noise[k]  # noqa: B023
                m = np.diag(mags) + mags[before].sum(0) + mags[:, before].sum(1)  # noqa: B023
                return v, m + np.abs(noise[k])  # noqa: B023

            s32 = s.astype(np.float32)
            expected = jestcore.joint_select(s32, b, n_chunks=chunks, seed=seed)
            got = jestcore.joint_select(
                torch.from_numpy(s32).to(device), b, n_chunks=chunks, seed=seed
            )
            assert got.device.type == device.type, got.device
            verdict = _near_tie_equal(got.cpu().numpy(), expected, logits_of, sizes)
            rows.append({"path": "matrix", "n": n, "seed": seed, "result": verdict})

            def pair(m: tuple, xp_tensor: bool) -> Any:
                image, text, scale, bias = m
                if xp_tensor:
                    image = torch.from_numpy(image.astype(np.float32)).to(device)
                    text = torch.from_numpy(text.astype(np.float32)).to(device)
                else:
                    image, text = image.astype(np.float32), text.astype(np.float32)
                return jestcore.PairEmbeddings(image, text, scale, bias)

            expected = jestcore.joint_select_embeddings(
                pair(learner, False), pair(reference, False), b, n_chunks=chunks, seed=seed
            )
            got = jestcore.joint_select_embeddings(
                pair(learner, True), pair(reference, True), b, n_chunks=chunks, seed=seed
            )
            verdict = _near_tie_equal(got.cpu().numpy(), expected, logits_of, sizes)
            rows.append({"path": "embeddings", "n": n, "seed": seed, "result": verdict})

            diag = np.diag(s).astype(np.float32)
            expected = jestcore.independent_select(diag, b, seed=seed)
            got = jestcore.independent_select(torch.from_numpy(diag).to(device), b, seed=seed)
            g = jestcore.gumbel_noise(seed, (n,), xp=np).astype(np.float64)

            def indep(before: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
                return diag + g, np.abs(diag) + np.abs(g)  # noqa: B023

            verdict = _near_tie_equal(got.cpu().numpy(), expected, indep, [b])
            rows.append({"path": "independent", "n": n, "seed": seed, "result": verdict})
    return rows


def check_noise_and_compile(device: Any, rng: np.random.Generator) -> dict[str, Any]:
    """Generator bits on the device (eager and compiled) against NumPy; compiled selection."""
    import torch

    import jestcore

    out: dict[str, Any] = {}
    n, b, chunks = 512, 64, 8
    ref = jestcore.uniform(7, (chunks, n), xp=np)
    xp = jestcore._namespace.namespace_of(torch.zeros(1), name="x")
    eager = jestcore.uniform(7, (chunks, n), xp=xp, device=device)
    out["uniform_eager_equal"] = bool(np.array_equal(eager.cpu().numpy(), ref))

    def draw(seed: Any) -> Any:
        return jestcore.uniform(seed, (chunks, n), xp=xp, device=device)

    seed_t = torch.tensor(7, dtype=torch.int64, device=device)
    compiled = torch.compile(draw, fullgraph=True)(seed_t)
    out["uniform_compiled_equal"] = bool(np.array_equal(compiled.cpu().numpy(), ref))

    s = torch.from_numpy(rng.standard_normal((n, n)).astype(np.float32)).to(device)

    def select(scores: Any, seed: Any) -> Any:
        return jestcore.joint_select(scores, b, n_chunks=chunks, seed=seed)

    eager_idx = select(s, seed_t)
    compiled_idx = torch.compile(select, fullgraph=True)(s, seed_t)
    out["joint_compiled_equal"] = bool(torch.equal(eager_idx, compiled_idx))
    for key, ok in out.items():
        if not ok:
            raise AssertionError(f"{key} failed on {device}")
    return out


def time_primitives(device: Any) -> list[dict[str, Any]]:
    """Native ``top_k`` and ``softplus`` against the generic array-API versions."""
    import torch
    from jestcore.backends import generic
    from jestcore.backends import torch as tb

    rows = []
    gen = torch.Generator(device="cpu").manual_seed(0)
    sizes = (4096, 65536, 1048576) if device.type == "cuda" else (4096, 65536)
    for n in sizes:
        x = torch.randn(n, generator=gen).to(device)
        for frac in (1 / 80, 1 / 16, 1 / 5):
            k = max(1, int(n * frac))
            assert torch.equal(tb.top_k(x, k), generic.top_k(x, k))
            t_native = _time(partial(tb.top_k, x, k), device)
            t_sort = _time(partial(generic.top_k, x, k), device)
            rows.append(
                {"op": "top_k", "n": n, "k": k, "native_s": t_native, "stable_sort_s": t_sort}
            )
    for n in (1 << 16, 1 << 22):
        z = torch.randn(n, generator=gen).mul_(8).to(device)
        rows.append(
            {
                "op": "softplus",
                "n": n,
                "native_s": _time(partial(tb.softplus, z), device),
                "generic_s": _time(partial(generic.softplus, z), device),
            }
        )
        m = torch.randn(256, n // 256, generator=gen).to(device)
        rows.append(
            {
                "op": "sum_softplus",
                "n": n,
                "native_s": _time(partial(tb.sum_softplus, m, 10.0, -5.0), device),
                "generic_s": _time(partial(generic.sum_softplus, m, 10.0, -5.0), device),
            }
        )
    return rows


def time_selection(device: Any) -> list[dict[str, Any]]:
    """Whole selections per call: from embeddings (streaming) and from a matrix."""
    import torch

    import jestcore

    rows = []
    gen = torch.Generator(device="cpu").manual_seed(1)
    cases = (
        ((2048, 512, 16, 128),)
        if device.type == "cpu"
        else ((5120, 1024, 16, 256), (40960, 8192, 16, 512))
    )
    for n, b, chunks, d in cases:
        emb = [
            torch.nn.functional.normalize(torch.randn(n, d, generator=gen), dim=1).to(device)
            for _ in range(4)
        ]
        learner = jestcore.PairEmbeddings(emb[0], emb[1], 10.0, -10.0)
        reference = jestcore.PairEmbeddings(emb[2], emb[3], 10.0, -10.0)
        run = partial(jestcore.joint_select_embeddings, learner, reference, b, n_chunks=chunks)
        t = _time(partial(run, seed=0), device, repeat=3)
        rows.append({"path": "embeddings", "n": n, "b": b, "d": d, "seconds": t})
        if n <= 8192:
            s = jestcore.learnability(
                jestcore.sigmoid_loss_matrix(emb[0], emb[1], scale=10.0, bias=-10.0),
                jestcore.sigmoid_loss_matrix(emb[2], emb[3], scale=10.0, bias=-10.0),
            )
            t = _time(
                partial(jestcore.joint_select, s, b, n_chunks=chunks, seed=0), device, repeat=3
            )
            rows.append({"path": "matrix", "n": n, "b": b, "d": d, "seconds": t})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (with --device cpu)")
    parser.add_argument("--out", help="JSON file (default bench/results/torch_check_DEVICE.json)")
    args = parser.parse_args(argv)
    try:
        import torch
    except ModuleNotFoundError:
        print("PyTorch is not installed: nothing to check.")
        return 0
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("No CUDA device available: skipping the GPU check (use --device cpu to run on CPU).")
        return 0
    warnings.filterwarnings("ignore", message=".*lru_cache.*")  # Dynamo on array_api_compat
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    report: dict[str, Any] = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
    }
    start = time.perf_counter()
    report["equivalence"] = check_equivalence(device, rng)
    print(
        f"equivalence with NumPy: {len(report['equivalence'])} selections agree "
        f"({sum(r['result'] != 'equal' for r in report['equivalence'])} near-ties)"
    )
    report["compile"] = check_noise_and_compile(device, rng)
    print(f"generator and torch.compile on {device}: {report['compile']}")
    report["primitives"] = time_primitives(device)
    print(f"\n{'op':<13}{'n':>9}{'k':>8}{'native ms':>12}{'fallback ms':>13}{'speed-up':>10}")
    for r in report["primitives"]:
        other = r.get("stable_sort_s", r.get("generic_s"))
        print(
            f"{r['op']:<13}{r['n']:>9}{r.get('k', ''):>8}{r['native_s'] * 1e3:>12.3f}"
            f"{other * 1e3:>13.3f}{other / r['native_s']:>9.1f}x"
        )
    report["selection"] = time_selection(device)
    print(f"\n{'selection':<12}{'N':>7}{'b':>6}{'d':>5}{'ms/call':>10}")
    for r in report["selection"]:
        print(f"{r['path']:<12}{r['n']:>7}{r['b']:>6}{r['d']:>5}{r['seconds'] * 1e3:>10.2f}")
    report["wall_s"] = time.perf_counter() - start
    out = Path(args.out or f"bench/results/torch_check_{device.type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"\nall checks passed in {report['wall_s']:.1f} s; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
