"""The PyTorch adapter's overhead over the spec: host synchronisations and time per step.

For super-batches of N = b / (1 - f) image-text pairs (f = 0.8, 16 chunks, embedding width d)
this measures, in one process, side by side:

* ``syncs``: host synchronisations of one :class:`~jestcore.adapters.torch.JESTSelector` step
  (learnability from ``PairEmbeddings``), counted deterministically with a
  ``torch.overrides.TorchFunctionMode`` that counts the calls that read a tensor's value on the
  host: ``Tensor.__bool__``, ``.item``, ``.tolist``, ``__int__``, ``__float__``, ``__index__``
  (and ``.numpy``). ``spec_syncs`` is the same count for the spec's
  ``jestcore.joint_select_embeddings`` alone, on the same inputs and seed;
* ``step_us`` and ``spec_us``: microseconds of the selector step and of the spec's selection
  alone (best of ``--repeats``, interleaved), and ``overhead_us``, their difference: what the
  adapter adds (checks, taking the sub-batch, statistics); ``*_cpu_us`` the same in CPU time
  of this process (all threads), which moves less with the load of a shared machine.

Timings are noisy on a shared machine; the sync counts are exact. Run
``python bench/torch_overhead.py`` (a minute on 2 cores) or ``--quick``; prints a table and
writes ``bench/results/torch_overhead.json`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c
import torch
from jestcore.adapters.torch import JESTSelector

import jestcore

#: Tensor methods that read a value on the host (a synchronisation on an accelerator).
SYNCING = {
    torch.Tensor.__bool__,
    torch.Tensor.item,
    torch.Tensor.tolist,
    torch.Tensor.__int__,
    torch.Tensor.__float__,
    torch.Tensor.__index__,
    torch.Tensor.numpy,
}


class SyncCounter(torch.overrides.TorchFunctionMode):
    """Counts the calls of :data:`SYNCING` made while it is active."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func in SYNCING:
            self.count += 1
        return func(*args, **(kwargs or {}))


def inputs(b: int, f: float, d: int, tensors: bool) -> tuple[Any, Any, Any]:
    """A super-batch of ``round(b / (1 - f))`` examples and two models' embeddings on it.

    ``tensors``: scale and bias as 0-d tensors (as a model returns them), else Python floats.
    """
    n = round(b / (1 - f))
    gen = torch.Generator().manual_seed(b)

    def model() -> jestcore.PairEmbeddings:
        image, text = (torch.nn.functional.normalize(torch.randn(n, d, generator=gen), dim=1)
                       for _ in range(2))  # fmt: skip
        scale, bias = (torch.tensor(v) if tensors else v for v in (10.0, -10.0))
        return jestcore.PairEmbeddings(image, text, scale, bias)

    batch = {"x": torch.randn(n, 8, generator=gen), "y": torch.arange(n)}
    return batch, model(), model()


def measure(b: int, f: float, d: int, tensors: bool, repeats: int) -> dict[str, Any]:
    batch, learner, reference = inputs(b, f, d, tensors)
    n = batch["y"].shape[0]
    selector = JESTSelector(batch_size=b, n_chunks=16, seed=0)

    def step() -> Any:
        selector.step = 0  # the same seed every time
        return selector(batch, learner, reference).indices

    def spec() -> Any:
        seed = jestcore.fold_in(0, 0)
        return jestcore.joint_select_embeddings(learner, reference, b, n_chunks=16, seed=seed)

    counts = {}
    for name, fn in (("syncs", step), ("spec_syncs", spec)):
        with SyncCounter() as counter:
            fn()
        counts[name] = counter.count
    agree = bool(torch.equal(step(), spec()))
    best = {k: float("inf") for k in ("step", "spec", "step_cpu", "spec_cpu")}
    for _ in range(repeats):  # interleaved, so both see the same load
        for name, fn in (("step", step), ("spec", spec)):
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
            best[f"{name}_cpu"] = min(best[f"{name}_cpu"], time.process_time() - start_cpu)
    us = {f"{k}_us": t * 1e6 for k, t in best.items()}
    return {
        "b": b, "N": n, "d": d, "f": f, "scale": "tensor" if tensors else "float", **counts,
        **us, "overhead_us": us["step_us"] - us["spec_us"],
        "overhead_cpu_us": us["step_cpu_us"] - us["spec_cpu_us"], "agree": agree,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    parser.add_argument("--out", type=Path, default=None, help="the JSON file to write")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per size")
    parser.add_argument("--sizes", default="64,4096", help="sub-batch sizes b, comma-separated")
    args = parser.parse_args()
    repeats = {64: 50, 4096: 3}
    b_values = [16] if args.quick else [int(b) for b in args.sizes.split(",")]
    sizes = [(b, repeats.get(b, 5)) for b in b_values]
    rows = [
        measure(b, 0.8, 64, tensors, args.repeats or r)
        for b, r in sizes
        for tensors in (False, True)
    ]
    print(c.table(rows, ["b", "N", "d", "scale", "syncs", "spec_syncs", "step_us", "spec_us",
                         "overhead_us", "step_cpu_us", "spec_cpu_us", "overhead_cpu_us",
                         "agree"]))  # fmt: skip
    default = Path("/tmp" if args.quick else c.RESULTS) / "torch_overhead.json"
    out = args.out or default
    c.write_json(out, {"environment": c.environment(), "results": rows})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
