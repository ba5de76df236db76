"""MkDocs hook: the API reference's view of the source, and its adapter pages.

1. **The import namespace for mkdocstrings.** The repository keeps ``jestcore/``, ``backends/``
   and ``adapters/`` side by side, and the installer maps the last two to ``jestcore.backends``
   and ``jestcore.adapters``. mkdocstrings reads source statically and does not see that
   mapping, so before each build this hook writes ``build/api-src/jestcore/``: symbolic links
   to every entry of ``jestcore/``, plus ``backends`` and ``adapters`` links to those folders.
   ``mkdocs.yml`` points mkdocstrings at ``build/api-src``.
2. **Pages written by others, in the nav when they exist.** See :data:`OPTIONAL_PAGES`. The
   marker ``<!-- optional-pages: SECTION -->`` in a page becomes a list of links to those of
   the section's optional pages that exist.
3. **One API page per adapter module.** Every public module of ``adapters/`` gets a page under
   "API reference > Adapters": ``docs/api/adapters/NAME.md`` when that file exists, else a
   generated page that renders the whole module (its docstring and every name in its
   ``__all__``). A new adapter is therefore documented, and in the nav, as soon as it lands.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from mkdocs.plugins import event_priority

#: Subpackages that live outside ``jestcore/`` in the repository: name -> folder.
MAPPED = {"backends": "backends", "adapters": "adapters"}
SHADOW = Path("build") / "api-src"
#: Nav titles of adapter modules, in nav order; others follow in alphabetical order.
ADAPTER_TITLES = {
    "torch": "PyTorch",
    "jax": "JAX",
    "cache": "Reference cache",
    "costs": "Compute accounting",
    "digits": "Digits dataset",
    "text": "Caption tokenizer",
    "synthetic": "Synthetic super-batch",
    "demo": "Demo runner",
    "cli": "Command line",
}


#: Pages that may or may not exist yet: (nav section, order, path under docs/). Those that exist
#: go right after the section's index page, in this order, titled by their first heading.
OPTIONAL_PAGES = (
    ("Tutorials", 1, "tutorials/pytorch.md"),
    ("Tutorials", 2, "tutorials/jax.md"),
    ("Demo results", 1, "dataset.md"),
    ("Benchmarks", 1, "selection-quality.md"),
)


def adapter_modules(root: Path) -> list[str]:
    """Public modules and packages of ``adapters/``, in nav order."""
    folder = root / "adapters"
    names = {
        p.stem if p.is_file() else p.name
        for p in folder.iterdir()
        if not p.name.startswith("_")
        and ((p.is_file() and p.suffix == ".py") or (p / "__init__.py").is_file())
    }
    known = [n for n in ADAPTER_TITLES if n in names]
    return known + sorted(names - set(known))


def adapter_page(name: str) -> str:
    """The Markdown of a generated adapter page."""
    title = ADAPTER_TITLES.get(name, name)
    return (
        f"# {title}\n\n"
        f"::: jestcore.adapters.{name}\n"
        "    options:\n"
        "      show_root_heading: false\n"
        "      show_root_toc_entry: false\n"
        "      members_order: source\n"
        "      show_if_no_docstring: true\n"
        "      heading_level: 2\n"
    )


def _docs_root(config: Any) -> Path:
    return Path(config.config_file_path).resolve().parent


def _write_shadow(root: Path) -> None:
    package = root / SHADOW / "jestcore"
    if package.parent.exists():
        shutil.rmtree(package.parent)
    package.mkdir(parents=True)
    for entry in (root / "jestcore").iterdir():
        if not entry.name.startswith((".", "__pycache__")) and entry.name not in MAPPED:
            (package / entry.name).symlink_to(entry)
    for name, folder in MAPPED.items():
        if (root / folder / "__init__.py").is_file():
            (package / name).symlink_to(root / folder, target_is_directory=True)


def _nav_section(config: Any, title: str) -> list[Any]:
    for item in config.nav or []:
        if isinstance(item, dict) and title in item and isinstance(item[title], list):
            return item[title]
    raise ValueError(f"mkdocs.yml nav has no {title!r} section")


def _add_optional_pages_to_nav(config: Any) -> None:
    docs = Path(config.docs_dir)
    inserted: dict[str, int] = {}
    for title, _, path in sorted(OPTIONAL_PAGES, key=lambda p: (p[0], p[1])):
        section = _nav_section(config, title)
        if (docs / path).is_file() and path not in section:
            at = min(1 + inserted.get(title, 0), len(section))  # after the index page
            section.insert(at, path)
            inserted[title] = inserted.get(title, 0) + 1


def _add_adapters_to_nav(config: Any, root: Path) -> None:
    entries = [{ADAPTER_TITLES.get(n, n): f"api/adapters/{n}.md"} for n in adapter_modules(root)]
    if not entries:
        return
    section = _nav_section(config, "API reference")
    section[:] = [e for e in section if not (isinstance(e, dict) and "Adapters" in e)]
    section.append({"Adapters": entries})


@event_priority(100)  # before mkdocstrings reads its search paths
def on_config(config: Any) -> Any:
    """Lays out ``build/api-src``; adds the optional and the adapter pages to the nav."""
    root = _docs_root(config)
    _write_shadow(root)
    _add_optional_pages_to_nav(config)
    _add_adapters_to_nav(config, root)
    return config


def _first_heading(path: Path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return path.stem


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Replaces ``<!-- optional-pages: SECTION -->`` with links to the pages that exist."""
    docs = Path(config.docs_dir)
    here = Path(page.file.src_uri).parent
    for title in {t for t, _, _ in OPTIONAL_PAGES}:
        marker = f"<!-- optional-pages: {title} -->"
        if marker not in markdown:
            continue
        links = [
            f"- [{_first_heading(docs / path)}]({Path(path).relative_to(here).as_posix()})"
            for t, _, path in sorted(OPTIONAL_PAGES, key=lambda p: p[1])
            if t == title and (docs / path).is_file()
        ]
        markdown = markdown.replace(marker, "\n".join(links))
    return markdown


def on_files(files: Any, config: Any) -> Any:
    """Generates the adapter pages that have no hand-written page."""
    from mkdocs.structure.files import File

    for name in adapter_modules(_docs_root(config)):
        uri = f"api/adapters/{name}.md"
        if files.get_file_from_path(uri) is None:
            files.append(File.generated(config, uri, content=adapter_page(name)))
    return files
