"""Checks the built site's search in headless Chromium: opened from disk and served over HTTP.

Not part of the build or the test suite (it needs a browser, which the project does not
install); tests/test_docs.py checks the files that make offline search work without one. Run
by hand after ``mkdocs build``::

    pip install playwright                       # the Python driver only
    apt-get install chromium-headless-shell      # or: python -m playwright install chromium
    python docs/hooks/check_search.py site [--browser /usr/bin/chromium-headless-shell]

For each of ``file://`` and ``http://`` (the folder served by ``http.server`` on a free local
port) it opens a page, checks the search box is there, types each term and waits for results
that link to the page expected to hold it. It prints one line per check and exits 1 if any
failed.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import shutil
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: (term typed into the search box, a page that must be among the results).
TERMS = (
    ("learnability", "concepts/scores.html"),
    ("EmbeddingCache", "tutorials/reference-cache.html"),
)
#: Where a search starts: a top page and a nested one (relative URLs differ).
START_PAGES = ("index.html", "recipes/dataloader.html")


@contextmanager
def serve(folder: Path) -> Iterator[str]:
    """``folder`` over HTTP on a free local port; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def find_browser(given: str | None) -> str | None:
    """The Chromium executable: ``given``, else one on PATH, else None (Playwright's own)."""
    if given:
        return given
    for name in ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


def search(page: Any, url: str, term: str) -> list[str]:
    """The result links after typing ``term`` into the search box of ``url``."""
    page.goto(url)
    box = page.locator("input.md-search__input")
    box.wait_for(state="visible", timeout=10_000)  # in the header at a desktop width
    box.click()
    page.wait_for_function(  # the worker has built the index ("Initializing search" before)
        "() => !document.querySelector('.md-search-result__meta')"
        ".textContent.includes('Initializing')",
        timeout=15_000,
    )
    box.press_sequentially(term)  # keystrokes, as a user types (search listens to keyup)
    page.locator(".md-search-result__item a").first.wait_for(timeout=15_000)
    read = "els => els.map(e => e.getAttribute('href') || '')"
    hrefs: list[str] = []
    for _ in range(50):  # each keystroke re-renders the list: read it once it is stable
        page.wait_for_timeout(200)
        now = page.eval_on_selector_all(".md-search-result__item a", read)
        if now and now == hrefs:
            break
        hrefs = now
    return hrefs


def main(argv: list[str] | None = None) -> int:
    """Runs the checks; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site", type=Path, help="the built site folder (mkdocs build -d SITE)")
    parser.add_argument("--browser", help="Chromium executable (default: found on PATH)")
    args = parser.parse_args(argv)
    site = args.site.resolve()
    if not (site / "search" / "search_index.js").is_file():
        print(f"{site} has no search/search_index.js: build with the offline plugin first")
        return 1
    from playwright.sync_api import Error, sync_playwright

    failures = 0
    with sync_playwright() as pw, serve(site) as http_base:
        browser = pw.chromium.launch(executable_path=find_browser(args.browser))
        print(f"browser: {browser.version}")
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        for base in (site.as_uri() + "/", http_base):
            for start in START_PAGES:
                for term, expected in TERMS:
                    errors.clear()
                    try:
                        hrefs = search(page, base + start, term)
                    except Error as e:
                        hrefs, errors = [], [*errors, str(e).splitlines()[0]]
                    ok = any(expected in h for h in hrefs) and not errors
                    failures += not ok
                    scheme = base.split(":")[0]
                    print(
                        f"{'ok  ' if ok else 'FAIL'} {scheme:4} {start:24} {term!r}: "
                        f"{len(hrefs)} results{'' if ok else f', {expected} expected'}"
                        + (f"; errors: {errors}" if errors else "")
                    )
        browser.close()
    print("search works from disk and over HTTP" if not failures else f"{failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
