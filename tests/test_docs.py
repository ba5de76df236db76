"""The documentation site: every public name is documented, every code block runs, the site builds.

* API coverage: each name in the ``__all__`` of ``jestcore``, ``jestcore.backends`` and every
  module of ``jestcore.adapters`` (found on disk, so a new adapter must be documented) has a
  ``::: module.name`` (or whole-module ``::: module``) directive in ``docs/api/``, and an entry
  with its anchor in the built API pages.
* Code blocks: each page's fenced ``python`` blocks run in order, in one namespace, in a fresh
  subprocess. A block is skipped only when the line before it is
  ``<!-- not-runnable: REASON -->`` with a non-empty reason; a block in any other language must
  carry that marker (or be ``text``: output and diagrams, which are not code).
* The site builds with ``mkdocs build --strict`` and loads nothing from the network.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import pkgutil
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest
from children import run_ok

import jestcore

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
API = DOCS / "api"

#: Fence languages that are output or diagrams, not code: they need no marker.
NOT_CODE = {"text"}

MARKER = re.compile(r"^\s*<!--\s*not-runnable:(?P<reason>.*?)-->\s*$")
FENCE_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
DIRECTIVE = re.compile(r"^:::\s+(?P<name>[\w.]+)\s*$", re.MULTILINE)


# ----------------------------------------------------------------------------- code blocks


@dataclass(frozen=True)
class Block:
    """A fenced code block of a Markdown page."""

    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    skip_reason: str | None  # the not-runnable reason, or None

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def parse_blocks(path: Path) -> list[Block]:
    """The fenced code blocks of ``path``, in order (fences may be indented, e.g. in tabs)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = FENCE_OPEN.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence = m["indent"], m["fence"]
        info = m["info"].strip()
        lang = info.split()[0].lstrip(".").lower() if info else ""
        close = re.compile(rf"^{re.escape(indent)}{fence[0]}{{{len(fence)},}}\s*$")
        j = i + 1
        while j < len(lines) and not close.match(lines[j]):
            j += 1
        if j == len(lines):
            raise AssertionError(f"{path}:{i + 1}: code fence never closed")
        body = [
            ln[len(indent) :] if ln.startswith(indent) else ln.lstrip() for ln in lines[i + 1 : j]
        ]
        k = i - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        marker = MARKER.match(lines[k]) if k >= 0 else None
        reason = marker["reason"].strip() if marker else None
        blocks.append(Block(path, i + 1, lang, textwrap.dedent("\n".join(body)), reason))
        i = j + 1
    return blocks


def markdown_pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if "hooks" not in p.relative_to(DOCS).parts)


PAGES = markdown_pages()
PAGES_WITH_CODE = [p for p in PAGES if any(b.lang == "python" for b in parse_blocks(p))]

RUNNER = r"""
import json, sys
blocks = json.load(sys.stdin)
namespace = {"__name__": "__main__"}
for where, code in blocks:
    print(f"--- {where}", flush=True)
    exec(compile(code, where, "exec"), namespace)
"""


def test_pages_found():
    assert DOCS / "index.md" in PAGES
    assert len(PAGES_WITH_CODE) >= 5, PAGES_WITH_CODE


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_every_block_is_runnable_or_marked(page):
    for block in parse_blocks(page):
        if block.skip_reason is not None:
            assert block.skip_reason, f"{block.where}: not-runnable marker without a reason"
            continue
        assert block.lang in {"python"} | NOT_CODE, (
            f"{block.where}: a ```{block.lang or '(no language)'} block is neither runnable "
            "python nor marked <!-- not-runnable: reason -->"
        )


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=lambda p: str(p.relative_to(DOCS)))
def test_code_blocks_run(page, tmp_path):
    blocks = [b for b in parse_blocks(page) if b.lang == "python" and b.skip_reason is None]
    env = {
        **os.environ,
        "MPLBACKEND": "Agg",
        "JAX_PLATFORMS": "cpu",
    }
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", RUNNER],
        input=json.dumps([(b.where, b.code) for b in blocks]),
        capture_output=True,
        text=True,
        cwd=tmp_path,  # files an example writes land in a temporary folder
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, (
        f"a code block of {page.relative_to(ROOT)} failed:\n{proc.stdout[-3000:]}\n"
        f"{proc.stderr[-6000:]}"
    )


def test_parser_reads_tabs_markers_and_languages(tmp_path):
    page = tmp_path / "p.md"
    page.write_text(
        "# t\n\n"
        '=== "A"\n\n    ```python\n    x = 1\n    if x:\n        y = 2\n    ```\n\n'
        "<!-- not-runnable: needs a GPU -->\n```python\nraise SystemExit\n```\n\n"
        "<!-- not-runnable:   -->\n````bash\nrm -rf /\n````\n\n"
        "```text\noutput\n```\n"
    )
    blocks = parse_blocks(page)
    assert [(b.lang, b.skip_reason) for b in blocks] == [
        ("python", None),
        ("python", "needs a GPU"),
        ("bash", ""),
        ("text", None),
    ]
    assert blocks[0].code == "x = 1\nif x:\n    y = 2"
    assert blocks[0].line == 5


# ----------------------------------------------------------------------------- API coverage


def _api_hook():
    spec = importlib.util.spec_from_file_location("api_source", DOCS / "hooks" / "api_source.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def documented_names() -> set[str]:
    """Names with a ``:::`` directive in docs/api, including the generated adapter pages."""
    hook = _api_hook()
    texts = [p.read_text(encoding="utf-8") for p in API.rglob("*.md")]
    texts += [
        hook.adapter_page(name)
        for name in hook.adapter_modules(ROOT)
        if not (API / "adapters" / f"{name}.md").is_file()
    ]
    return {name for text in texts for name in DIRECTIVE.findall(text)}


#: Public modules that their package does not re-export (imported on their own).
STANDALONE_MODULES = ("jestcore.adapters.jax.trainer",)


def public_modules() -> list[str]:
    """``jestcore``, ``jestcore.backends``, every public module of ``jestcore.adapters`` and
    :data:`STANDALONE_MODULES`."""
    package = importlib.import_module("jestcore.adapters")
    adapters = [
        f"jestcore.adapters.{m.name}"
        for m in pkgutil.iter_modules(package.__path__)
        if not m.name.startswith("_")
    ]
    return ["jestcore", "jestcore.backends", *sorted(adapters), *STANDALONE_MODULES]


@pytest.mark.parametrize("module", public_modules())
def test_every_public_name_is_documented(module):
    mod = importlib.import_module(module)  # an adapter that exists must import
    public = list(getattr(mod, "__all__", []))
    assert public, f"{module} must list its public names in __all__"
    documented = documented_names()
    if module != "jestcore" and module in documented:
        return  # a whole-module directive; test_api_pages_render_every_public_name checks it
    missing = [n for n in public if f"{module}.{n}" not in documented]
    assert not missing, (
        f"public names of {module} missing from docs/api/*.md (add '::: {module}.NAME' or "
        f"'::: {module}'): {missing}"
    )


def test_documented_names_exist():
    for name in documented_names():
        module, _, attr = name.rpartition(".")
        mod = importlib.import_module(module)
        assert hasattr(mod, attr), f"docs/api documents {name}, which does not exist"


def test_core_names_are_covered_by_the_check():
    assert set(jestcore.__all__) <= {
        n.rpartition(".")[2] for n in documented_names() if n.startswith("jestcore.")
    }
    assert {"jestcore.backends", "jestcore.adapters.demo"} <= set(public_modules())


# ----------------------------------------------------------------------------- the built site


class _Assets(HTMLParser):
    """Collects the URLs a page loads (scripts, stylesheets, images, fonts), not plain links."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag in {"script", "img", "iframe", "source", "video", "audio"} and a.get("src"):
            self.urls.append(a["src"] or "")
        if tag == "link" and a.get("href") and a.get("rel") not in {"canonical", "alternate"}:
            self.urls.append(a["href"] or "")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    # Not --quiet: it raises the log level above WARNING, so --strict would count no warnings.
    build = ["-m", "mkdocs", "build", "--strict", "-d", out]
    run_ok(build, cwd=ROOT, env={**os.environ, "MPLBACKEND": "Agg"})
    return out


@pytest.mark.slow
def test_site_loads_nothing_from_the_network(site):
    pages = sorted(site.rglob("*.html"))
    assert len(pages) >= 10
    for page in pages:
        parser = _Assets()
        parser.feed(page.read_text(encoding="utf-8"))
        remote = [u for u in parser.urls if re.match(r"^(https?:)?//", u)]
        assert not remote, f"{page.relative_to(site)} loads remote assets: {remote}"
    css = "\n".join(p.read_text(encoding="utf-8") for p in site.rglob("*.css"))
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", css), "a stylesheet loads a remote URL"
    assert (site / "assets" / "katex" / "katex.min.js").is_file()
    assert (site / "assets" / "katex" / "fonts" / "KaTeX_Main-Regular.woff2").is_file()


@pytest.mark.slow
def test_api_pages_render_every_public_name(site):
    html = "\n".join(p.read_text(encoding="utf-8") for p in (site / "api").rglob("*.html"))
    for module in public_modules():
        for name in importlib.import_module(module).__all__:
            assert f'id="{module}.{name}"' in html, f"{module}.{name} has no rendered entry"


@pytest.mark.slow
def test_maths_is_left_for_the_vendored_katex(site):
    html = (site / "concepts" / "joint-selection.html").read_text(encoding="utf-8")
    assert 'class="arithmatex"' in html
    assert "katex.min.js" in html and "javascripts/katex.js" in html


@pytest.mark.slow
def test_search_works_from_disk(site):
    """What search needs when the site is opened from disk (file://), checked without a browser.

    mkdocs-material's offline plugin inlines the index into search/search_index.js (a page on
    file:// cannot fetch the JSON) and needs page.html links; every page loads the vendored
    iframe-worker shim, which runs the search worker in an iframe (file:// pages cannot start
    Web Workers). docs/hooks/check_search.py types a query in headless Chromium.
    """
    script = (site / "search" / "search_index.js").read_text(encoding="utf-8")
    prefix = "var __index = "
    assert script.startswith(prefix)
    index = json.loads(script[len(prefix) :])
    assert index == json.loads((site / "search" / "search_index.json").read_text("utf-8"))
    hits = {d["location"].split("#")[0] for d in index["docs"] if "learnability" in d["text"]}
    assert "concepts/scores.html" in hits
    pages = sorted(set(site.rglob("*.html")) - {site / "404.html"})  # 404: absolute URLs
    for page in pages:
        parser = _Assets()
        parser.feed(page.read_text(encoding="utf-8"))
        shims = [u for u in parser.urls if u.endswith("iframe-worker/shim.js")]
        assert len(shims) == 1, f"{page.relative_to(site)} does not load the worker shim"
        assert (page.parent / shims[0]).resolve().is_file()
    home = (site / "index.html").read_text(encoding="utf-8")
    assert 'href="getting-started.html"' in home  # no directory URLs: links open from disk


# ----------------------------------------------------------------------------- benchmarks page


def _results_hook():
    spec = importlib.util.spec_from_file_location("results", DOCS / "hooks" / "results.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Config:
    config_file_path = str(ROOT / "mkdocs.yml")
    docs_dir = str(DOCS)


def test_benchmark_targets_are_sentences_with_reasons():
    hook = _results_hook()
    summary = {
        "fastest": "jax",
        "targets_at_N=16384": {
            "speedup_vs_literal>=25": {"value": 3.94, "met": False},
            "peak_rss_mib<=1000": {"value": 442.4, "met": True},
            "a_over_floor<=1.5": {"value": None, "met": False},
        },
        "failed": [],
    }
    lines = hook._summary_lines(summary)
    assert lines[0] == "**fastest**: jax"
    assert lines[1].startswith("target `speedup_vs_literal>=25` (at N=16384): 3.94, **not met**: ")
    assert "same matrix products" in lines[1]  # why, from WHY_NOT_MET
    assert lines[2] == "target `peak_rss_mib<=1000` (at N=16384): 442.4, **met**"
    assert lines[3].endswith(": not measured in this run")
    assert lines[4] == "**failed**: none"
    assert not any(".met" in line or "false" in line for line in lines)


def test_benchmarks_summary_comes_from_the_committed_results():
    hook = _results_hook()
    rows = hook._summary_rows(_Config())
    by_measure = {measure: (result, target, source) for measure, result, target, source in rows}
    floor = next(v for k, v in by_measure.items() if k.startswith("streaming selection ÷"))
    data = json.loads((ROOT / "bench" / "results" / "select_embeddings.json").read_text())
    jax = next(r for r in data["results"] if r["N"] == 16384 and r["label"] == "a"
               and r["framework"] == "jax")  # fmt: skip
    assert f"JAX {jax['x_floor']:.2f}x" in floor[0]
    assert floor[2] == f"`select_embeddings.json` @ `{data['environment']['git_commit']}`"
    not_met = [target for _, target, _ in by_measure.values() if "**not met**" in target]
    assert not_met and all(len(t.split("**not met**: ")[1]) > 40 for t in not_met)  # a reason
    ports = by_measure["against the public ports' approaches"]
    softmax = json.loads((ROOT / "bench" / "results" / "select_softmax.json").read_text())
    recompute = next(r for r in softmax["results"] if r["method"] == "recompute")
    assert ports[0].startswith(f"{recompute['x_softmax_stream_time']}x faster than DRRho-CLIP")
    assert ports[0].endswith("the same indices") == recompute["same"]
    page = hook.on_page_markdown((DOCS / "benchmarks.md").read_text(), None, _Config(), None)
    assert hook.SUMMARY_MARKER not in page and hook.BENCH_MARKER not in page
    assert '??? abstract "All ' in page  # the wide tables are folded
    assert "met**: false" not in page


# ----------------------------------------------------------------------------- getting started


def _run_alone(block: Block) -> str:
    """``block``'s stdout when it runs by itself in a fresh interpreter (warnings as errors)."""
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", block.code],
        capture_output=True,
        text=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        timeout=300,
    )
    assert proc.returncode == 0, f"{block.where} does not run on its own:\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.mark.slow
def test_getting_started_blocks_run_alone_and_tabs_agree():
    """Each block of the 30-second example runs by itself (no names from another tab), and the
    NumPy, PyTorch and JAX tabs, which convert the same NumPy embeddings, print the same
    indices."""
    blocks = [b for b in parse_blocks(DOCS / "getting-started.md") if b.lang == "python"]
    assert len(blocks) == 4
    printed = [_run_alone(b).splitlines()[0] for b in blocks]
    indices = [line.split("]")[0] + "]" for line in printed[:3]]
    assert indices[0] == indices[1] == indices[2], printed
    assert indices[0].startswith("[") and len(json.loads(indices[0])) == 8
    assert printed[3].startswith("[")
