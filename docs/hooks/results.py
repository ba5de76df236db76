"""MkDocs hook: renders measured results into the site at build time.

* ``benchmarks.md``: the marker ``<!-- bench-summary -->`` becomes the headline numbers read
  from the result files (:func:`_summary_markdown`: streaming vs its arithmetic floor and vs the
  literal Algorithm 1, memory, the targets and, where one is not met, why), each with the file
  and commit it comes from; the marker ``<!-- bench-results -->`` becomes one section per
  ``bench/results/*.json`` file: its title, description, command, machine, summary (targets as
  sentences), a plot (the benchmark's own ``bench/results/NAME.png`` or ``.svg`` when it drew
  one, else a log-log plot generated here when the records have a size column and timing
  columns) and its records in a folded table. With no results the page says so.
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
SUMMARY_MARKER = "<!-- bench-summary -->"
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
    if {"methods", "target_accuracy", "config"} <= meta.keys():
        return None  # a `jestcore demo` results.json: the Demo page shows it, not this one
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
    titles = [r["title"] for _, r in results]
    for stem, r in results:
        repeated = titles.count(r["title"]) > 1  # several runs of one benchmark: name the file
        parts.append(f"## {r['title']}" + (f" (`{stem}`)" if repeated else "") + "\n")
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
            parts.append("\n".join(f"- {line}" for line in _summary_lines(summary)) + "\n")
        uri = _plot_uri(config, stem, r)
        if uri is not None:
            parts.append(f"![{r['title']}]({uri})\n")
        n = len(r["records"])
        table = "\n".join("    " + line for line in _table(r["records"]).splitlines())
        parts.append(f'??? abstract "All {n} measurements"\n\n{table}\n')
        for key, value in r["details"].items():
            body = json.dumps(value, indent=1)
            if len(body) > 20_000:
                body = body[:20_000] + "\n..."
            indented = "\n".join("    " + line for line in body.splitlines())
            parts.append(f'??? note "{key}"\n\n    ```json\n{indented}\n    ```\n')
    return "\n".join(parts)


def _is_target(v: Any) -> bool:
    return isinstance(v, dict) and "met" in v and set(v) <= {"value", "met", "target"}


def _summary_lines(summary: dict[str, Any], prefix: str = "") -> list[str]:
    """A result file's summary as lines: targets as sentences, other values as ``key: value``.

    A target is ``{"value": x, "met": bool}`` under its name (``"a_over_floor<=1.5"``), or a
    summary with ``target``, ``met`` and a value; a target not met says why when
    :data:`WHY_NOT_MET` knows.
    """
    lines: list[str] = []
    if isinstance(summary.get("target"), str) and isinstance(summary.get("met"), bool):
        value = next((summary[k] for k in ("speedup", "value") if k in summary), None)
        lines.append(_target_sentence(summary["target"], value, summary["met"]))
        summary = {k: v for k, v in summary.items() if k not in ("target", "met", "speedup")}
    for k, v in summary.items():
        if _is_target(v):
            lines.append(_target_sentence(k, v.get("value"), v["met"], where=prefix))
        elif isinstance(v, dict):
            lines += _summary_lines(v, f"{prefix}{k}, ")
        elif isinstance(v, list) and not v:
            lines.append(f"**{prefix}{k}**: none")
        elif not (isinstance(v, list) and any(isinstance(x, dict) for x in v)):
            lines.append(f"**{prefix}{k}**: {_fmt(v)}")
    return lines


def _target_sentence(name: str, value: Any, met: bool, where: str = "") -> str:
    where = where.rstrip(", ").replace("targets_at_", "at ")
    head = f"target `{name}`{f' ({where})' if where else ''}: "
    if value is None:
        return head + "not measured in this run"
    why = "" if met else WHY_NOT_MET.get(name, "")
    verdict = "**met**" if met else "**not met**"
    return head + f"{_fmt(value)}, {verdict}" + (f": {why}" if why else "")


#: Why a target is not met, by the target's name in the result files (see bench/README.md).
WHY_NOT_MET = {
    "speedup_vs_literal>=25": (
        "on a CPU both are bound by the same matrix products; streaming computes "
        "4 x (15/16) b x N x d multiply-adds, 0.375x the 2 N^2 d of the two loss matrices the "
        "literal forms at f = 0.8, so the ratio is about 2.7x plus the literal's masked "
        "re-sums (~4x under XLA, ~11-15x in eager NumPy and PyTorch)"
    ),
    "joint_select >= 20x faster than literal at N = 8192": (
        "~90% of joint_select's time is the column gather of each chunk, a strided, "
        "latency-bound read of c entries from every row; every alternative measured "
        "(a transposed copy, blocked transposes, a matrix-vector product) cost more, and on "
        "one core the ratio tops out near 13x at this size"
    ),
}


def _read(config: Any, stem: str) -> dict[str, Any] | None:
    path = _root(config) / "bench" / "results" / f"{stem}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _source(stem: str, data: dict[str, Any]) -> str:
    env = data.get("environment") or {}
    commit = env.get("git_commit")
    return f"`{stem}.json`" + (f" @ `{commit}`" if commit else "")


def _records(data: dict[str, Any], **match: Any) -> list[dict[str, Any]]:
    records = data.get("results") or data.get("runs") or []
    return [r for r in records if all(r.get(k) == v for k, v in match.items())]


def _mib(v: Any) -> str:
    return f"{v / 1024:.2f} GiB" if v >= 1024 else f"{v:.0f} MiB"


NAMES = {"numpy": "NumPy", "torch": "PyTorch", "jax": "JAX"}


Row = tuple[str, str, str, str]


def _verdict(shown: str, met: Any, why: str = "") -> str:
    """``shown: met`` / ``shown: not met: why`` / ``shown: not measured`` (``met`` None)."""
    if met is None:
        return f"{shown}: not measured"
    if met:
        return f"{shown}: **met**"
    return f"{shown}: **not met**" + (f": {why}" if why else "")


def _embedding_rows(emb: dict[str, Any]) -> list[Row]:
    """Streaming selection at N = 16,384 from ``select_embeddings.json``."""
    src = _source("select_embeddings", emb)
    stream = {r["framework"]: r for r in _records(emb, method="stream", N=16384)}
    if not stream:
        return []
    targets = (emb.get("summary") or {}).get("targets_at_N=16384") or {}

    def ratios(key: str) -> str:
        shown = []
        for fw, r in stream.items():
            if isinstance(r.get(key), int | float):
                cpu = r.get(f"{key}_cpu") if fw == "torch" else None
                extra = f" ({cpu:.2f}x in CPU seconds)" if isinstance(cpu, int | float) else ""
                shown.append(f"{NAMES.get(fw, fw)} {r[key]:.2f}x{extra}")
        return ", ".join(shown)

    def verdict(name: str, shown: str) -> str:
        t = targets.get(name) or {}
        met = None if t.get("value") is None else t.get("met")
        return _verdict(shown, met, WHY_NOT_MET.get(name, ""))

    memory = ", ".join(f"{NAMES.get(fw, fw)} {_mib(r['peak_rss_mib'])}" for fw, r in stream.items())
    return [
        (
            "streaming selection ÷ its arithmetic floor (the four products per chunk), "
            "N = 16,384, wall time",
            ratios("x_floor"),
            verdict("a_over_floor<=1.5", "≤ 1.5x on the fastest backend"),
            src,
        ),
        (
            "literal Algorithm 1 ÷ streaming selection, N = 16,384 (from embeddings)",
            ratios("speedup_vs_literal"),
            verdict("speedup_vs_literal>=25", "≥ 25x"),
            src,
        ),
        (
            "peak memory (RSS) of streaming selection, N = 16,384",
            memory,
            verdict("peak_rss_mib<=1000", "≤ 1000 MiB on the fastest backend"),
            src,
        ),
    ]


def _matrix_rows(matrix: dict[str, Any]) -> list[Row]:
    """``joint_select`` on a given matrix vs the literal, from ``select_matrix.json``."""
    big = max(_records(matrix), key=lambda r: r.get("N", 0), default=None)
    if big is None:
        return []
    summary = matrix.get("summary") or {}
    target = str(summary.get("target", "target"))
    result = (
        f"{big['speedup']:.1f}x (the listing as printed, with its float64 mask: "
        f"{big['speedup_vs_paper_listing']:.1f}x)"
    )
    return [
        (
            f"literal Algorithm 1 ÷ `joint_select` on a given N x N matrix, N = {big['N']:,}",
            result,
            _verdict(target, summary.get("met"), WHY_NOT_MET.get(target, "")),
            _source("select_matrix", matrix),
        )
    ]


def _memory_rows(emb: dict[str, Any] | None, after: dict[str, Any] | None) -> list[Row]:
    """Peak memory at paper scale and of JAX at N = 65,536.

    Paper scale from ``select_embeddings``, JAX's from ``jax_select_after`` (its own memory
    benchmark, often the newer run) where that has it.
    """
    rows: list[Row] = []
    paper = [] if emb is None else _records(emb, method="stream", N=163840)
    sources = [_source("select_embeddings", emb)] if emb is not None and paper else []
    jax_paper = [] if after is None else _records(after, kind="rss", n=163840)
    if after is not None and jax_paper:
        paper = [r for r in paper if r["framework"] != "jax"]
        paper.append({"framework": "jax", **jax_paper[0]})
        sources.append(_source("jax_select_after", after))
    if paper:
        shown = [
            f"{NAMES.get(r['framework'], r['framework'])} {_mib(r['peak_rss_mib'])}"
            + (" (`jax.jit`)" if r["framework"] == "jax" else "")
            for r in paper
        ]
        rows.append(
            (
                "peak memory at paper scale (N = 163,840, b = 32,768)",
                ", ".join(shown),
                _verdict("< 4 GiB", all(r["peak_rss_mib"] < 4096 for r in paper)),
                ", ".join(sources),
            )
        )
    jax_mid = [] if after is None else _records(after, kind="rss", n=65536)
    if after is not None and jax_mid:
        rss = jax_mid[0]["peak_rss_mib"]
        why = (
            "XLA keeps about six row-block temporaries of a chunk alive; pass a smaller "
            "`block_size` where memory is tight"
        )
        rows.append(
            (
                "peak memory of `jax.jit` selection, N = 65,536",
                f"JAX {_mib(rss)}",
                _verdict("≤ 1000 MiB", rss <= 1000, why),
                _source("jax_select_after", after),
            )
        )
    return rows


def _summary_rows(config: Any) -> list[Row]:
    """(measure, result, target, source) rows of the headline numbers, from the result files."""
    emb, matrix = _read(config, "select_embeddings"), _read(config, "select_matrix")
    after, soak = _read(config, "jax_select_after"), _read(config, "soak")
    rows = _embedding_rows(emb) if emb is not None else []
    rows += _matrix_rows(matrix) if matrix is not None else []
    rows += _memory_rows(emb, after)
    if soak is not None:
        summary = soak.get("summary") or {}
        rows.append(
            (
                "memory over 10,000 consecutive selections per backend",
                str(summary.get("verdict", "")),
                _verdict("no growth beyond noise", not summary.get("growth_beyond_noise")),
                _source("soak", soak),
            )
        )
    softmax = _read(config, "select_softmax")
    rows.append(_ports_row(softmax))
    return rows


def _ports_row(softmax: dict[str, Any] | None) -> Row:
    """The public ports' approaches, re-implemented in ``bench/`` (no port is on PyPI)."""
    measure = "against the public ports' approaches"
    others = (
        "the other public ports form the N x N loss matrices, as the literal Algorithm 1 rows "
        "above do; no port is on the package registry, so none is run as third-party code"
    )
    found = _records(softmax, method="recompute") if softmax is not None else []
    if not found:
        return measure, "not measured", others, "—"
    r, stream = found[0], found[0].get("softmax_stream_same_n") or {}
    result = (
        f"{r.get('x_softmax_stream_time')}x faster than DRRho-CLIP's Algorithm 3 (re-forms the "
        f"N x N softmax logits every chunk; re-implemented from its description) at "
        f"N = {r.get('N'):,}, {NAMES.get(r.get('framework'), r.get('framework'))}: "
        f"{r.get('seconds', 0):.1f} s vs {stream.get('seconds', 0):.2f} s, peak RSS "
        f"{_mib(r.get('peak_rss_mib', 0))} vs {_mib(stream.get('peak_rss_mib', 0))}, "
        + ("the same indices" if r.get("same") else "different indices")
    )
    return measure, result, f"none set; {others}", _source("select_softmax", softmax or {})


def _summary_markdown(config: Any) -> str:
    rows = _summary_rows(config)
    lines = ["| measure | result | target | from |", "|---|---|---|---|"]
    lines += [f"| {' | '.join(c.replace('|', '/') for c in row)} |" for row in rows]
    return "\n".join(lines)


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
    if SUMMARY_MARKER in markdown:
        markdown = markdown.replace(SUMMARY_MARKER, _summary_markdown(config))
    if BENCH_MARKER in markdown:
        markdown = markdown.replace(BENCH_MARKER, _bench_markdown(config))
    if DEMO_MARKER in markdown:
        markdown = markdown.replace(DEMO_MARKER, _demo_markdown(config))
    return markdown
