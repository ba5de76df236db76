"""Demo-level evidence of the paper's claims (issue 14, part 6), 3 seeds, measured and plotted.

Two experiments drive :func:`jestcore.adapters.demo.run_demo` (the PyTorch trainer) with
:class:`~jestcore.adapters.demo.DemoConfig` variants; every variant trains ``uniform``,
``independent``, ``jest`` and ``flexi_jest`` for the same seeds:

* ``filter_ratio`` (the paper's Fig. 3): the recipe at ``f`` in {0.5, 0.8, 0.9}. The paper finds
  that joint selection's gain over uniform grows with ``f`` while independent selection's does
  not.
* ``recipe``: the paper's recipe (the current defaults: gain 100, Adam beta2 0.95 when filtering,
  Flexi co-training, A.4 FLOP accounting) against the previous defaults, gain 1 and beta2 0.999
  (:mod:`_demo_backend`: ``DemoConfig`` has no beta2 field, the trainer's ``adam_beta2`` does).
  Flexi co-training cannot be switched off (the trainers always co-train), so both variants
  co-train; the accounting is a bookkeeping choice, so both variants are also reported with
  the FLOPs of training without re-using the scoring forward (``flops_speedup_no_reuse``).
  The recipe variant is the ``filter_ratio`` run at ``f = 0.8`` (run once).

The convention is the demo's own (:func:`jestcore.adapters.demo.summarize`): the target is
uniform's final zero-shot accuracy (the last value of the seed-mean uniform curve smoothed over
``smoothing_window`` evaluations); steps-to-target is the first evaluation at which a smoothed
curve reaches it. *Mean-curve* speed-ups are uniform's steps (FLOPs) to target over the
method's, both read off seed-mean curves; *per-seed* speed-ups pair each seed's uniform run
with the same seed's method run (same data order and initialization) against the same target,
``None`` when either never reaches it. FLOPs include scoring, selection, training and the
cached reference pass (:mod:`jestcore.adapters.demo.costs`).

Run ``python bench/demo_evidence.py`` (about 15-20 minutes on 2 shared cores) or ``--quick``
(seconds). Writes ``bench/results/demo_evidence.json`` (after every variant) with
``demo_evidence_filter_ratio.png`` and ``demo_evidence_recipe.png`` alongside, and copies the
plots to ``docs/assets/`` (``--assets``).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from _common import RESULTS, ROOT, environment, parse_args, table, write_json
from jestcore.adapters import recipe
from jestcore.adapters.demo import DemoConfig, default_workers, model_flops, run_demo

EXPERIMENTS = ("filter_ratio", "recipe")
FILTER_RATIOS = (0.5, 0.8, 0.9)
#: The methods of every variant (uniform sets the target).
METHODS = ("uniform", "independent", "jest", "flexi_jest")
#: The methods compared with uniform.
SELECTING = METHODS[1:]
#: The previous defaults, against the paper's recipe.
PREVIOUS_GAIN = 1.0
NAME = "demo_evidence"


def base_config(args: argparse.Namespace) -> DemoConfig:
    """The config every variant starts from: the demo's default, or a tiny one for --quick."""
    if args.quick:
        return DemoConfig(
            steps=30,
            seeds=1,
            methods=METHODS,
            reference_steps=30,
            eval_every=10,
            image_hidden=32,
            smoothing_window=3,
        )
    return DemoConfig(steps=args.steps, seeds=args.seeds, methods=METHODS)


def _key(config: DemoConfig, backend: str) -> str:
    return backend + json.dumps(config.as_dict(), sort_keys=True)


class Runner:
    """Runs each (config, backend) once (the recipe variant is the f = 0.8 scaling run)."""

    def __init__(self, workers: int, progress: bool) -> None:
        self.workers, self.progress = workers, progress
        self.done: dict[str, dict[str, Any]] = {}

    def __call__(self, config: DemoConfig, backend: str) -> dict[str, Any]:
        """The results of ``run_demo(config)`` on ``backend`` ("torch" or "beta2_0.999")."""
        key = _key(config, backend)
        if key not in self.done:
            start = time.perf_counter()
            if backend == "torch":
                trainer: Any = "torch"
            else:
                import _demo_backend as trainer
            results = run_demo(
                config, backend=trainer, progress=self.progress, workers=self.workers
            )
            results["wall_seconds"] = round(time.perf_counter() - start, 1)
            self.done[key] = results
            print(
                f"  ran {backend} f={config.filter_ratio} gain={config.gain:g}: "
                f"{results['wall_seconds']:.0f} s",
                file=sys.stderr,
                flush=True,
            )
        return self.done[key]


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else float(a) / float(b)


def _no_reuse_flops(results: dict[str, Any], method: str, config: DemoConfig) -> float | None:
    """FLOPs to target on the seed-mean curve if training recomputed the scoring forward.

    The A.4 convention charges training ``2 b F`` when the learner scores at the training
    resolution (the forward of the selected pairs is re-used); without re-use it is ``3 b F``.
    Flexi-JEST (co-training) and uniform never re-use, so they are unchanged.
    """
    entry = results["methods"][method]
    steps = entry["mean_curve_steps_to_target"]
    if steps is None:
        return None
    per_step = entry["flops_per_step"]["total"]
    spec = recipe.method_spec(method)
    if spec.uses_learner and spec.co_training == 0.0:
        per_step += config.batch_size * model_flops(config)
    return float(entry["flops_offset"] + steps * per_step)


def records(
    results: dict[str, Any], config: DemoConfig, experiment: str, variant: str, beta2: float
) -> list[dict[str, Any]]:
    """One record per method of a demo run: speed-ups vs uniform, per seed and mean curve."""
    methods = results["methods"]
    uniform = methods["uniform"]
    rows = []
    for method, entry in methods.items():
        per_seed_steps = [
            _ratio(u, m)
            for u, m in zip(uniform["steps_to_target"], entry["steps_to_target"], strict=True)
        ]
        per_seed_flops = [
            _ratio(u, m)
            for u, m in zip(uniform["flops_to_target"], entry["flops_to_target"], strict=True)
        ]
        speedups = results["speedups"][method]
        acc = entry["final_accuracy"]
        row: dict[str, Any] = {
            "experiment": experiment,
            "variant": variant,
            "filter_ratio": config.filter_ratio,
            "gain": config.gain,
            "adam_beta2": uniform_or(method, beta2, config),
            "method": method,
            "final_accuracy": float(np.mean(acc)),
            "final_accuracy_sd": float(np.std(acc)),
            "target_accuracy": results["target_accuracy"],
            "steps_to_target": entry["mean_curve_steps_to_target"],
            "steps_speedup": speedups["uniform_steps_to_target_over_steps_to_target"],
            "flops_speedup": _ratio(1.0, speedups["flops_to_target_over_uniform"]),
            "steps_to_target_per_seed": entry["steps_to_target"],
            "steps_speedup_per_seed": per_seed_steps,
            "flops_speedup_per_seed": per_seed_flops,
        }
        if experiment == "recipe":
            row["flops_speedup_no_reuse"] = _ratio(
                uniform["mean_curve_flops_to_target"], _no_reuse_flops(results, method, config)
            )
        rows.append(row)
    return rows


def uniform_or(method: str, beta2: float, config: DemoConfig) -> float:
    """Adam's beta2 of ``method`` in a variant whose filtering methods train with ``beta2``."""
    default = recipe.adam_beta2(method, config.filter_ratio)
    return default if default == recipe.UNIFORM_BETA2 else beta2


def _curves(results: dict[str, Any]) -> dict[str, Any]:
    """The seed-by-seed zero-shot curves of a run, compactly (for the plots and the record)."""
    methods = results["methods"]
    return {
        "steps": methods["uniform"]["curves"]["steps"],
        "zero_shot": {m: [[round(x, 4) for x in c] for c in e["curves"]["zero_shot"]]
                      for m, e in methods.items()},
    }  # fmt: skip


def _grows(values: Sequence[float | None]) -> bool | None:
    if any(v is None for v in values):
        return None
    return all(b > a for a, b in itertools.pairwise(values))


def summary(rows: list[dict[str, Any]], ratios: Sequence[float]) -> dict[str, Any]:
    """Headline numbers: mean-curve speed-ups by f and variant, and whether they grow with f."""
    out: dict[str, Any] = {}
    scaling = [r for r in rows if r["experiment"] == "filter_ratio"]
    if scaling:
        for what in ("steps_speedup", "flops_speedup"):
            out[what] = {
                m: {
                    str(f): next(
                        (r[what] for r in scaling if r["method"] == m and r["filter_ratio"] == f),
                        None,
                    )
                    for f in ratios
                }
                for m in SELECTING
            }
        for m in ("jest", "independent"):
            by_f = list(out["steps_speedup"][m].values())
            if len(by_f) == len(ratios) and len(ratios) > 1:
                out[f"{m}_steps_speedup_grows_with_f"] = _grows(by_f)
    comparison = [r for r in rows if r["experiment"] == "recipe" and r["method"] in SELECTING]
    if comparison:
        out["recipe_vs_previous"] = {
            m: {
                r["variant"]: {
                    "steps_speedup": r["steps_speedup"],
                    "flops_speedup": r["flops_speedup"],
                    "final_accuracy": round(r["final_accuracy"], 4),
                }
                for r in comparison
                if r["method"] == m
            }
            for m in SELECTING
        }
    return out


# ----------------------------------------------------------------------------- plots

COLORS = {"uniform": "0.35", "independent": "C1", "jest": "C0", "flexi_jest": "C2"}


def plot_filter_ratio(payload: dict[str, Any], path: Path) -> None:
    """Speed-ups vs uniform against f (steps and FLOPs) and final accuracy against f."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in payload["results"] if r["experiment"] == "filter_ratio"]
    ratios = sorted({r["filter_ratio"] for r in rows})
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
    panels = (
        ("steps_speedup", "steps_speedup_per_seed", "steps-to-target speed-up vs uniform"),
        ("flops_speedup", "flops_speedup_per_seed", "FLOPs-to-target speed-up vs uniform"),
    )
    for ax, (key, per_seed, label) in zip(axes[:2], panels, strict=True):
        for m in SELECTING:
            mine = sorted((r for r in rows if r["method"] == m), key=lambda r: r["filter_ratio"])
            xs = [r["filter_ratio"] for r in mine]
            ys = [np.nan if r[key] is None else r[key] for r in mine]
            ax.plot(xs, ys, "o-", color=COLORS[m], label=f"{m} (seed-mean curve)")
            for r in mine:
                seeds = [s for s in r[per_seed] if s is not None]
                ax.plot([r["filter_ratio"]] * len(seeds), seeds, ".", color=COLORS[m], alpha=0.5)
        ax.axhline(1.0, color="0.3", linestyle="--", linewidth=1)
        ax.set_xlabel("filter ratio f")
        ax.set_ylabel(label)
        ax.set_xticks(ratios)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="upper left")
    for m in METHODS:
        mine = sorted((r for r in rows if r["method"] == m), key=lambda r: r["filter_ratio"])
        xs = [r["filter_ratio"] for r in mine]
        mean = np.asarray([r["final_accuracy"] for r in mine])
        sd = np.asarray([r["final_accuracy_sd"] for r in mine])
        axes[2].errorbar(xs, mean, yerr=sd, fmt="o-", color=COLORS[m], label=m, capsize=3)
    axes[2].set_xlabel("filter ratio f")
    axes[2].set_ylabel("final zero-shot accuracy (mean ± sd)")
    axes[2].set_xticks(ratios)
    axes[2].grid(alpha=0.3)
    axes[2].legend(fontsize=8)
    cfg = payload["config"]
    fig.suptitle(
        f"Demo, filter-ratio scaling: {cfg['steps']} steps, b = {cfg['batch_size']}, "
        f"gain {cfg['gain']:g}, {cfg['seeds']} seeds (dots: per seed, paired with uniform)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_recipe(payload: dict[str, Any], path: Path) -> None:
    """Seed-mean curves of both variants, and their speed-ups vs uniform as bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {v: payload["runs"][k] for v, k in payload["recipe_runs"].items()}
    rows = [r for r in payload["results"] if r["experiment"] == "recipe"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [1.3, 1]})
    styles = {"recipe": "-", "previous": "--"}
    for variant, run in runs.items():
        steps = np.asarray(run["curves"]["steps"])
        for m, curves in run["curves"]["zero_shot"].items():
            if m == "uniform" and variant != "recipe":
                continue  # the same runs (uniform neither samples nor filters)
            mean = np.asarray(curves).mean(axis=0)
            axes[0].plot(
                steps, mean, styles[variant], color=COLORS[m], label=f"{m} ({variant})", lw=1.5
            )
    axes[0].axhline(runs["recipe"]["target_accuracy"], color="0.3", ls=":", lw=1)
    axes[0].set_xlabel("learner steps")
    axes[0].set_ylabel("zero-shot accuracy (seed mean)")
    axes[0].grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    labels, width = [], 0.2
    bars = [
        ("recipe", "steps_speedup", "steps, recipe"),
        ("previous", "steps_speedup", "steps, previous"),
        ("recipe", "flops_speedup", "FLOPs, recipe"),
        ("previous", "flops_speedup", "FLOPs, previous"),
    ]
    for i, (variant, key, label) in enumerate(bars):
        ys = []
        for m in SELECTING:
            row = next((r for r in rows if r["variant"] == variant and r["method"] == m), None)
            ys.append(np.nan if row is None or row[key] is None else row[key])
        xs = np.arange(len(SELECTING)) + (i - 1.5) * width
        axes[1].bar(
            xs, ys, width, label=label, color=f"C{i // 2 + 3}", alpha=1.0 if i % 2 == 0 else 0.5
        )
        labels = list(SELECTING)
    axes[1].axhline(1.0, color="0.3", ls="--", lw=1)
    axes[1].set_xticks(np.arange(len(labels)), labels)
    axes[1].set_ylabel("speed-up vs uniform (seed-mean curves)")
    axes[1].legend(fontsize=8)
    axes[1].grid(alpha=0.3, axis="y")
    cfg = payload["config"]
    fig.suptitle(
        f"Demo at f = {cfg['filter_ratio']}: the paper's recipe (gain 100, beta2 0.95) vs the "
        f"previous defaults (gain 1, beta2 0.999), {cfg['seeds']} seeds"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the experiments, prints tables, writes the JSON and the plots."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--experiment", choices=(*EXPERIMENTS, "all"), default="all")
    p.add_argument("--steps", type=int, default=DemoConfig.steps, help="learner steps per run")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--filter-ratios", type=float, nargs="+", default=list(FILTER_RATIOS))
    p.add_argument("--workers", type=int, default=None, help="default: the usable CPUs")
    p.add_argument(
        "--assets",
        type=Path,
        default=None,
        help="folder to copy the plots to (default docs/assets, none with --quick)",
    )
    p.add_argument("--no-progress", action="store_true")
    args = parse_args(p, argv, lambda spec: spec, quick="tiny runs (1 seed, 30 steps)")
    if args is None:
        return 0
    experiments = EXPERIMENTS if args.experiment == "all" else (args.experiment,)
    if args.out is None:
        args.out = (Path(tempfile.gettempdir()) if args.quick else RESULTS) / f"{NAME}.json"
    assets = args.assets
    if assets is None and not args.quick:
        assets = ROOT / "docs" / "assets"
    workers = 1 if args.quick else (args.workers or default_workers())
    base = base_config(args)
    ratios = tuple(args.filter_ratios)
    run = Runner(workers, progress=not args.no_progress)
    payload: dict[str, Any] = {
        "title": "Demo evidence: filter-ratio scaling and the paper's recipe",
        "description": (
            "jestcore demo (PyTorch) at several filter ratios, and the paper's recipe (gain "
            "100, beta2 0.95) against the previous defaults (gain 1, beta2 0.999). Target: "
            "uniform's final seed-mean zero-shot accuracy (smoothed); speed-ups are uniform's "
            "steps (FLOPs) to target over the method's, on seed-mean curves and per seed "
            "(paired with the same seed's uniform run; None where either never reaches it)."
        ),
        "command": None,
        "environment": environment(),
        "config": base.as_dict(),
        "summary": {},
        "results": [],
        "runs": {},
        "recipe_runs": {},
    }
    payload["command"] = payload["environment"]["command"]
    start = time.perf_counter()

    def record(config: DemoConfig, backend: str, experiment: str, variant: str, beta2: float):
        results = run(config, backend)
        key = f"{backend} f={config.filter_ratio} gain={config.gain:g}"
        payload["runs"][key] = {
            "backend": backend,
            "filter_ratio": config.filter_ratio,
            "gain": config.gain,
            "adam_beta2_filtering": beta2,
            "target_accuracy": results["target_accuracy"],
            "wall_seconds": results["wall_seconds"],
            "curves": _curves(results),
        }
        if experiment == "recipe":
            payload["recipe_runs"][variant] = key
        payload["results"] += records(results, config, experiment, variant, beta2)
        payload["summary"] = summary(payload["results"], ratios)
        payload["total_wall_seconds"] = round(time.perf_counter() - start, 1)
        write_json(args.out, payload)

    if "filter_ratio" in experiments:
        for f in ratios:
            config = dataclasses.replace(base, filter_ratio=f)
            record(config, "torch", "filter_ratio", f"f={f}", recipe.FILTERING_BETA2)
    if "recipe" in experiments:
        config = dataclasses.replace(base, filter_ratio=0.8)
        record(config, "torch", "recipe", "recipe", recipe.FILTERING_BETA2)
        previous = dataclasses.replace(config, gain=PREVIOUS_GAIN)
        record(previous, "beta2_0.999", "recipe", "previous", recipe.UNIFORM_BETA2)

    columns = [
        "experiment", "variant", "method", "final_accuracy", "steps_to_target", "steps_speedup",
        "flops_speedup", "steps_speedup_per_seed",
    ]  # fmt: skip
    shown = [
        {**r, "steps_speedup_per_seed": " ".join(_cell(x) for x in r["steps_speedup_per_seed"])}
        for r in payload["results"]
    ]
    print(table(shown, columns))
    print(json.dumps(payload["summary"], indent=1))
    plots = []
    if "filter_ratio" in experiments:
        plots.append(("filter_ratio", plot_filter_ratio))
    if "recipe" in experiments:
        plots.append(("recipe", plot_recipe))
    for name, plot in plots:
        png = args.out.with_name(f"{args.out.stem}_{name}.png")
        plot(payload, png)
        print(f"wrote {png}")
        if assets is not None:
            assets.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(png, assets / f"demo_{name}.png")
    print(f"wrote {args.out} ({payload['total_wall_seconds']:.0f} s)")
    return 0


def _cell(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


if __name__ == "__main__":
    sys.exit(main())
