"""MkDocs hook: renders measured results into the site at build time.

* ``benchmarks.md``: the marker ``<!-- bench-results -->`` becomes one section per
  ``bench/results/*.json`` file: its title, description, command, machine, summary, a table of
  its records, and a plot: the benchmark's own ``bench/results/NAME.png`` (or ``.svg``) when it
  drew one, else a log-log plot generated here when the records have a size column and timing
  columns. With no results the page says so.
* ``demo.md``: the marker ``<!-- demo-figure -->`` becomes the committed results of a demo
  run, the files ``jestcore demo --out DIR`` writes, copied to ``docs/assets/demo/``: the
  learning curves ``curves.png`` (or ``.svg``) and a table of ``results.json`` (per method:
  final accuracy, steps and FLOPs to uniform's final accuracy). Without them the page says how
  to make them.

The JSON a benchmark writes (see ``docs/contributing.md``)::

    {"title": "...", "description": "...", "command": "python bench/x.py",
     "environment": {"python": "3.11", "numpy": "2.4", ...},
     "summary": {"speedup": 31.2, "met": true},
     "results": [{"backend": "numpy", "N": 1024, "seconds": 0.01, ...}, ...]}

Every key is optional except a list of records (``results``, else ``cases``, else the first
list of objects at the top level, or the file itself when it is such a list). Nested objects in
a record become dotted columns; lists of objects in a record are left out of the table. Other
top-level objects (e.g. ``config``) are shown, collapsed, as JSON.
"""

from __future__ import annotations

import io
import json
import logging
import math
from pathlib import Path
from typing import Any

log = logging.getLogger("mkdocs.hooks.results")

BENCH_MARKER = "<!-- bench-results -->"
DEMO_MARKER = "<!-- demo-figure -->"
#: Columns read as the size axis of a plot, in order of preference.
SIZE_KEYS = ("N", "n", "super_batch", "size", "n_select", "b")
#: Column-name endings read as timings (seconds or milliseconds).
TIME_SUFFIXES = ("seconds", "_s", "_ms", "time", "_time")
#: Keys of the environment shown on the page (the JSON keeps them all).
ENV_KEYS = (
    "processor", "cpus_usable", "cpu_count", "cpus", "memory_gib", "python", "numpy", "torch",
    "jax", "platform", "git_commit",
)  # fmt: skip
#: Top-level keys rendered in their own way (the others that hold objects go in "Details").
KNOWN_KEYS = {"title", "name", "description", "command", "environment", "machine", "summary"}
#: Columns that name a series in a plot (one line per distinct combination).
SERIES_KEYS = ("backend", "method", "impl", "implementation", "variant", "path", "device", "dtype")


def _root(config: Any) -> Path:
    return Path(config.config_file_path).resolve().parent


def _load(path: Path) -> dict[str, Any] | None:
    """A result file as ``{"title", "description", "command", "environment", "records"}``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        log.warning("bench results %s could not be read: %s", path, e)
        return None
    meta: dict[str, Any] = data if isinstance(data, dict) else {}
    records: Any = data if isinstance(data, list) else meta.get("results", meta.get("cases"))
    if records is None:
        records = next(
            (v for v in meta.values() if isinstance(v, list) and v and isinstance(v[0], dict)),
            None,
        )
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        log.warning("bench results %s hold no list of records; skipped", path)
        return None
    env = meta.get("environment") or meta.get("machine") or {}
    return {
        "title": meta.get("title") or meta.get("name") or path.stem.replace("_", " "),
        "description": meta.get("description", ""),
        "command": meta.get("command", "") or (env.get("command", "") if env else ""),
        "environment": env,
        "summary": meta.get("summary") or {},
        "details": {
            k: v
            for k, v in meta.items()
            if k not in KNOWN_KEYS and isinstance(v, dict | list) and v is not records
        },
        "records": [_flatten(r) for r in records],
    }


def _flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in record.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        elif not (isinstance(v, list) and any(isinstance(x, dict | list) for x in v)):
            out[f"{prefix}{k}"] = v
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return "—" if v is None else str(v).lower()
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e6):
            return f"{v:.3g}"
        return f"{v:.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, list):
        return ", ".join(_fmt(x) for x in v)
    return str(v).replace("|", "\\|").replace("\n", " ")


def _table(records: list[dict[str, Any]]) -> str:
    columns: list[str] = []
    for r in records:
        columns += [k for k in r if k not in columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in records:
        lines.append("| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _plot_spec(records: list[dict[str, Any]]) -> tuple[str, list[str], list[str]] | None:
    """(size column, timing columns, series columns) when the records can be plotted."""
    x = next((k for k in SIZE_KEYS if all(_is_num(r.get(k)) for r in records)), None)
    if x is None or len({r[x] for r in records}) < 2:
        return None
    times = [
        k
        for k in records[0]
        if k.lower().endswith(TIME_SUFFIXES) and all(_is_num(r.get(k)) for r in records)
    ]
    if not times:
        return None
    series = [k for k in SERIES_KEYS if any(k in r for r in records)]
    return x, times, series


def _plot_svg(result: dict[str, Any], spec: tuple[str, list[str], list[str]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, times, series = spec
    records = result["records"]
    fig, axes = plt.subplots(1, len(times), figsize=(5.2 * len(times), 3.6), squeeze=False)
    for ax, t in zip(axes[0], times, strict=True):
        groups: dict[str, list[tuple[float, float]]] = {}
        for r in records:
            label = " · ".join(str(r[s]) for s in series if s in r) or t
            if r[t] > 0:
                groups.setdefault(label, []).append((r[x], r[t]))
        for label, pts in sorted(groups.items()):
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(x)
        ax.set_ylabel(t)
        ax.grid(True, which="both", alpha=0.3)
        if len(groups) > 1:
            ax.legend(fontsize=8)
    fig.suptitle(result["title"], fontsize=11)
    fig.tight_layout()
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    plt.close(fig)
    return buf.getvalue().encode()


def _results(config: Any) -> list[tuple[str, dict[str, Any]]]:
    paths = sorted((_root(config) / "bench" / "results").glob("*.json"))
    loaded = [(p.stem, _load(p)) for p in paths]
    return [(stem, r) for stem, r in loaded if r is not None and r["records"]]


def _own_plot(config: Any, stem: str) -> Path | None:
    """The plot a benchmark drew beside its JSON, if any."""
    for ext in ("svg", "png"):
        path = _root(config) / "bench" / "results" / f"{stem}.{ext}"
        if path.is_file():
            return path
    return None


def _plot_uri(config: Any, stem: str, result: dict[str, Any]) -> str | None:
    own = _own_plot(config, stem)
    if own is not None:
        return f"benchmarks/{own.name}"
    return f"benchmarks/{stem}.svg" if _plot_spec(result["records"]) is not None else None


def on_files(files: Any, config: Any) -> Any:
    """Adds the benchmark plots (the benchmarks' own, or generated here) to the site's files."""
    from mkdocs.structure.files import File

    for stem, result in _results(config):
        own = _own_plot(config, stem)
        if own is not None:
            uri = f"benchmarks/{own.name}"
            files.append(File.generated(config, uri, abs_src_path=str(own)))
            continue
        spec = _plot_spec(result["records"])
        if spec is not None:
            svg = _plot_svg(result, spec)
            files.append(File.generated(config, f"benchmarks/{stem}.svg", content=svg))
    return files


def _bench_markdown(config: Any) -> str:
    results = _results(config)
    if not results:
        return (
            '!!! note "No benchmark results yet"\n\n'
            "    `bench/results/` holds no result files in this build. Run `make bench` to "
            "measure on your machine; the tables and plots appear here on the next build."
        )
    parts = []
    for stem, r in results:
        parts.append(f"## {r['title']}\n")
        if r["description"]:
            parts.append(f"{r['description']}\n")
        source = f"`bench/results/{stem}.json`"
        if r["command"]:
            source += f", written by `{r['command']}`"
        parts.append(f"Source: {source}.\n")
        env = r["environment"]
        if isinstance(env, dict) and env:
            shown = [f"{k} {_fmt(env[k])}" for k in ENV_KEYS if env.get(k) not in (None, "")]
            parts.append("Measured on: " + ", ".join(shown) + ".\n")
        summary = r["summary"]
        if isinstance(summary, dict) and summary:
            flat = _flatten(summary)
            parts.append("\n".join(f"- **{k}**: {_fmt(v)}" for k, v in flat.items()) + "\n")
        uri = _plot_uri(config, stem, r)
        if uri is not None:
            parts.append(f"![{r['title']}]({uri})\n")
        parts.append(_table(r["records"]) + "\n")
        for key, value in r["details"].items():
            body = json.dumps(value, indent=1)
            if len(body) > 20_000:
                body = body[:20_000] + "\n..."
            indented = "\n".join("    " + line for line in body.splitlines())
            parts.append(f'??? note "{key}"\n\n    ```json\n{indented}\n    ```\n')
    return "\n".join(parts)


DEMO_DIR = Path("assets") / "demo"


def _mean_sd(values: Any, fmt: str) -> str:
    got = [v for v in values or [] if isinstance(v, int | float)]
    if not got:
        return "never"
    mean = sum(got) / len(got)
    sd = (sum((v - mean) ** 2 for v in got) / len(got)) ** 0.5
    missed = len(values) - len(got)
    return f"{mean:{fmt}} ± {sd:{fmt}}" + (f" ({missed} never)" if missed else "")


def _demo_table(results: dict[str, Any]) -> str:
    methods = results.get("methods") or {}
    speedups = results.get("speedups") or {}
    lines = [
        "| method | final accuracy | steps to target | FLOPs to target ÷ uniform "
        "| FLOPs per step | what it does |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in methods.items():
        steps = m.get("mean_curve_steps_to_target")
        ratio = (speedups.get(name) or {}).get("flops_to_target_over_uniform")
        per_step = (m.get("flops_per_step") or {}).get("total")
        lines.append(
            f"| `{name}` | {_mean_sd(m.get('final_accuracy'), '.3f')} "
            f"| {'never' if steps is None else _fmt(steps)} "
            f"| {'never' if ratio is None else f'{ratio:.2f}'} "
            f"| {_fmt(per_step)} | {_fmt(m.get('description', ''))} |"
        )
    target = results.get("target_accuracy")
    head = (
        f"Target: uniform's final zero-shot accuracy, {target:.3f}. "
        if isinstance(target, float)
        else ""
    )
    return (
        f"{head}Steps and FLOPs to target are those of the seed-mean curve; FLOPs include "
        "scoring, selection, training and the one-time cached reference pass.\n\n"
        + "\n".join(lines)
    )


def _demo_markdown(config: Any) -> str:
    folder = Path(config.docs_dir) / DEMO_DIR
    parts = []
    for ext in ("svg", "png"):
        if (folder / f"curves.{ext}").is_file():
            uri = (DEMO_DIR / f"curves.{ext}").as_posix()
            parts.append(f"![Learning curves of the demo]({uri})")
            break
    results_path = folder / "results.json"
    if results_path.is_file():
        try:
            results = json.loads(results_path.read_text(encoding="utf-8"))
        except ValueError as e:
            log.warning("demo results %s could not be read: %s", results_path, e)
        else:
            if isinstance(results, dict) and results.get("methods"):
                parts.append(_demo_table(results))
    if parts:
        return "\n\n".join(parts)
    return (
        '!!! note "No committed demo results in this build"\n\n'
        "    Run `make demo` to train the models and draw the learning curves on your "
        "machine (it writes `demo-out/results.json` and `demo-out/curves.png`); copy those "
        "two files to `docs/assets/demo/` to show them here."
    )


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Replaces the result markers of the benchmarks and demo pages."""
    if BENCH_MARKER in markdown:
        markdown = markdown.replace(BENCH_MARKER, _bench_markdown(config))
    if DEMO_MARKER in markdown:
        markdown = markdown.replace(DEMO_MARKER, _demo_markdown(config))
    return markdown
