"""The ``jestcore`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    import numpy as np
    from jestcore.adapters.synthetic import compare_selection, make_superbatch

    n_select = round(args.n * (1 - args.filter_ratio))
    if not 1 <= n_select <= args.n:
        raise SystemExit(f"--filter-ratio must leave between 1 and {args.n} examples")
    runs = []
    for seed in range(args.seeds):
        batch = make_superbatch(args.n, mismatch_rate=args.mismatch_rate, seed=seed)
        runs.append(compare_selection(batch, n_select, n_chunks=args.n_chunks, seed=seed))
    print(
        f"Synthetic super-batch: N = {args.n} image-text pairs, {args.mismatch_rate:.0%} "
        f"mismatched; keep b = {n_select} (filter ratio {args.filter_ratio}), "
        f"{args.n_chunks} chunks, mean ± sd over {args.seeds} seeds\n"
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
        (out / "synthetic.json").write_text(json.dumps(summary, indent=2))
        print(f"\nwrote {out / 'synthetic.json'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Runs the ``jestcore`` command line.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(prog="jestcore", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="compare uniform, independent and joint learnability selection on a synthetic "
        "super-batch with planted mismatched pairs",
    )
    demo.add_argument("--n", type=int, default=8192, help="super-batch size N")
    demo.add_argument("--filter-ratio", type=float, default=0.8, help="fraction filtered out")
    demo.add_argument("--n-chunks", type=int, default=16)
    demo.add_argument("--mismatch-rate", type=float, default=0.3)
    demo.add_argument("--seeds", type=int, default=3)
    demo.add_argument("--out", default=None, help="folder to write synthetic.json to")
    demo.set_defaults(run=_demo)
    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
