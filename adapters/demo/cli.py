"""The ``jestcore`` command line (bare ``jestcore`` prints the help; ``--version``).

* ``jestcore demo``: the main job. Trains a reference and one learner per selection method on
  the embedded noisy digits data and reports who reaches uniform sampling's final accuracy
  first, in learner steps and in FLOPs including scoring (:mod:`jestcore.adapters.demo`).
* ``jestcore select-demo``: one synthetic super-batch with planted mismatched pairs, and what
  uniform, independent and joint learnability selection keep of it (no training, seconds).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    from jestcore.adapters.demo import app as demo

    overrides = {
        key: value
        for key, value in (
            ("steps", args.steps),
            ("seeds", args.seeds),
            ("filter_ratio", args.filter_ratio),
            ("batch_size", args.batch_size),
            ("gain", args.gain),
            ("loss", args.loss),
            ("eval_every", args.eval_every),
            ("methods", tuple(args.methods) if args.methods else None),
        )
        if value is not None
    }
    if args.methods and "uniform" not in overrides["methods"]:
        overrides["methods"] = ("uniform", *overrides["methods"])
    try:
        if args.corruption_rate is not None:
            data = demo.DemoConfig().data
            overrides["data"] = dataclasses.replace(data, corruption_rate=args.corruption_rate)
        config = demo.DemoConfig.quick(**overrides) if args.quick else demo.DemoConfig(**overrides)
        trainer = demo.load_backend(args.backend)
    except (TypeError, ValueError, ImportError) as error:
        print(f"jestcore demo: error: {error}", file=sys.stderr)
        return 2
    out = Path(args.out)
    workers = demo.default_workers() if args.workers is None else args.workers
    if workers < 1:
        print(f"jestcore demo: error: --workers must be >= 1, got {workers}", file=sys.stderr)
        return 2
    results = demo.run_demo(
        config, backend=trainer, out=out, progress=not args.no_progress, workers=workers
    )
    print(demo.format_table(results))
    print(
        f"\nwrote {out / 'results.json'} and {out / 'curves.png'} ({results['wall_seconds']:.0f} s)"
    )
    return 0


def _select_demo(args: argparse.Namespace) -> int:
    import numpy as np
    from jestcore.adapters.demo.app import _write_json
    from jestcore.adapters.demo.synthetic import compare_selection, make_superbatch

    import jestcore

    try:
        n_select = jestcore.sub_batch_size(args.n, filter_ratio=args.filter_ratio)
    except (TypeError, ValueError) as error:
        print(f"jestcore select-demo: error: {error}", file=sys.stderr)
        return 2
    runs = []
    for seed in range(args.seeds):
        batch = make_superbatch(args.n, mismatch_rate=args.mismatch_rate, seed=seed)
        try:
            runs.append(
                compare_selection(
                    batch, n_select, n_chunks=args.n_chunks, gain=args.gain, seed=seed
                )
            )
        except (TypeError, ValueError) as error:
            print(f"jestcore select-demo: error: {error}", file=sys.stderr)
            return 2
    print(
        f"Synthetic super-batch: N = {args.n} image-text pairs, {args.mismatch_rate:.0%} "
        f"mismatched; keep b = {n_select} (filter ratio {args.filter_ratio}), "
        f"{args.n_chunks} chunks, gain {args.gain:g}, mean ± sd over {args.seeds} seeds\n"
    )
    header = ("method", "mismatched kept", "unlearnt clean kept", "batch learnability")
    print(f"{header[0]:<13}{header[1]:>18}{header[2]:>22}{header[3]:>22}")
    summary: dict[str, dict[str, list[float]]] = {}
    for method in runs[0]:
        cols = {k: [r[method][k] for r in runs] for k in runs[0][method]}
        summary[method] = cols
        cells = [
            f"{np.mean(cols[k]):{fmt}} ± {np.std(cols[k]):{fmt}}"
            for k, fmt in (
                ("mismatched_kept", ".1%"),
                ("unlearnt_clean_kept", ".1%"),
                ("batch_learnability", ".1f"),
            )
        ]
        print(f"{method:<13}{cells[0]:>18}{cells[1]:>22}{cells[2]:>22}")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        _write_json(out / "synthetic.json", summary)
        print(f"\nwrote {out / 'synthetic.json'}")
    return 0


_DESCRIPTION = (
    "jestcore: JEST data selection (Evans et al., arXiv 2406.17711). "
    "'jestcore demo' trains SigLIP dual encoders on noisy digits under each selection method "
    "and reports steps and FLOPs to uniform sampling's final accuracy; 'jestcore select-demo' "
    "compares selections on one synthetic super-batch (no training)."
)


class _HelpFormatter(argparse.HelpFormatter):
    """Appends each option's default to its help, unless the help already states it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if not action.option_strings or action.default is argparse.SUPPRESS or "default" in text:
            return text
        return f"{text} (default: {'off' if action.nargs == 0 else '%(default)s'})"


def _defaults(name: str) -> str:
    """``"default N; --quick M"`` of a demo config field (the options' defaults are ``None``)."""
    from jestcore.adapters.demo.app import DemoConfig

    full, quick = getattr(DemoConfig(), name), getattr(DemoConfig.quick(), name)
    return f"default: {full}" + ("" if quick == full else f"; --quick: {quick}")


def _parser() -> argparse.ArgumentParser:
    from jestcore.adapters.demo.app import BACKENDS, METHODS, DemoConfig

    import jestcore
    from jestcore.streaming import LOSSES

    formatter = _HelpFormatter
    parser = argparse.ArgumentParser(
        prog="jestcore", description=_DESCRIPTION, formatter_class=formatter
    )
    parser.add_argument("--version", action="version", version=f"jestcore {jestcore.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{demo,select-demo}")
    demo = sub.add_parser(
        "demo",
        formatter_class=formatter,
        help="train SigLIP (or CLIP) dual encoders on noisy digits with uniform sampling, "
        "hard-learner, "
        "easy-reference, independent learnability, JEST and Flexi-JEST; report steps and FLOPs "
        "to uniform's final accuracy",
        description="Train a reference on the curated split and a learner per selection method "
        "on the noisy pool; print a table and write OUT/results.json and OUT/curves.png. "
        "The default run takes a few minutes on 2 CPU cores.",
    )
    demo.add_argument("--backend", choices=sorted(BACKENDS), default="torch", help="trainer")
    demo.add_argument(
        "--steps", type=int, default=None, help=f"learner steps ({_defaults('steps')})"
    )
    demo.add_argument(
        "--seeds", type=int, default=None, help=f"seeds per method ({_defaults('seeds')})"
    )
    demo.add_argument(
        "--filter-ratio",
        type=float,
        default=None,
        help=f"f, the filtered fraction: super-batch N = b/(1-f) ({_defaults('filter_ratio')})",
    )
    demo.add_argument(
        "--batch-size", type=int, default=None, help=f"sub-batch b ({_defaults('batch_size')})"
    )
    demo.add_argument(
        "--gain",
        type=float,
        default=None,
        help="score gain of the sampling: top-k of gain * logit + Gumbel noise per chunk; "
        f"1 is Algorithm 1 as printed ({_defaults('gain')}, the paper's recipe)",
    )
    demo.add_argument(
        "--loss",
        choices=LOSSES,
        default=None,
        help="contrastive loss of the reference, the learners and every selection: sigmoid "
        "(SigLIP, Algorithm 1) or softmax (CLIP: symmetric cross-entropy, learnable "
        f"temperature, no bias; Algorithm 3) ({_defaults('loss')})",
    )
    demo.add_argument(
        "--eval-every",
        type=int,
        default=None,
        help=f"steps between evaluations ({_defaults('eval_every')})",
    )
    demo.add_argument(
        "--methods",
        nargs="+",
        choices=METHODS,
        default=None,
        help=f"methods to run, uniform always among them (default: all; --quick: "
        f"{' '.join(DemoConfig.quick().methods)})",
    )
    demo.add_argument(
        "--corruption-rate",
        type=float,
        default=None,
        help=f"corrupted fraction of the pool (default: {DemoConfig().data.corruption_rate})",
    )
    demo.add_argument("--out", default="demo-out", help="output folder")
    demo.add_argument(
        "--quick",
        action="store_true",
        help="a small run (uniform and jest, 2 seeds, 300 steps)",
    )
    demo.add_argument(
        "--workers",
        type=int,
        default=None,
        help="parallel training processes (default: the usable CPUs; 1: in this process)",
    )
    demo.add_argument(
        "--no-progress",
        action="store_true",
        help="hide progress (shown on stderr: bars on a terminal, plain lines otherwise)",
    )
    demo.set_defaults(run=_demo)

    select = sub.add_parser(
        "select-demo",
        formatter_class=formatter,
        help="compare uniform, independent and joint learnability selection on one synthetic "
        "super-batch with planted mismatched pairs (no training)",
        description="Draw a synthetic super-batch with planted mismatched pairs and report what "
        "uniform, independent and joint learnability selection keep of it.",
    )
    select.add_argument("--n", type=int, default=8192, help="super-batch size N")
    select.add_argument("--filter-ratio", type=float, default=0.8, help="fraction filtered out")
    select.add_argument("--n-chunks", type=int, default=16, help="chunks of joint selection")
    select.add_argument(
        "--gain",
        type=float,
        default=100.0,
        help="score gain of the sampling (1 is Algorithm 1 as printed; 100 the paper's recipe)",
    )
    select.add_argument(
        "--mismatch-rate", type=float, default=0.3, help="fraction of mismatched pairs"
    )
    select.add_argument("--seeds", type=int, default=3, help="super-batches (seeds) to average")
    select.add_argument(
        "--out", default=None, help="folder to write synthetic.json to (default: none, not written)"
    )
    select.set_defaults(run=_select_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the ``jestcore`` command line.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:  # bare ``jestcore``: the help, and success
        parser.print_help()
        return 0
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
