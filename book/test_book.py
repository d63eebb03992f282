"""The book in a real browser: build it, serve it on 127.0.0.1, load every page in headless Chromium.

Run from the repository root with `python -m pytest book` (its own command: the README's test command
does not collect it). Skipped, saying why, when the book tool (`pip install -e ".[book]"`), Selenium,
Chromium or its driver (`apt-get install chromium chromium-driver`) is missing.

Checks: the build succeeds with warnings as errors and runs no notebook; every page loads with every
resource it asks for; no internal link points to a missing page, file or anchor; no image is missing;
math is typeset by MathJax on every page that has some; every lecture that stored figures shows them
all; the exercises carry no solutions. `VITLOCAL_BOOK_SCREENSHOTS=DIR` also saves two screenshots there.
"""

import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from urllib.error import HTTPError
from urllib.parse import unquote, urldefrag, urlsplit
from urllib.request import urlopen

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("sphinx", reason='the book tool is not installed: pip install -e ".[book]"')
pytest.importorskip("myst_nb", reason='the book tool is not installed: pip install -e ".[book]"')
pytest.importorskip("jupyter_server_mathjax", reason='the book\'s MathJax is not installed: pip install -e ".[book]"')
webdriver = pytest.importorskip("selenium.webdriver", reason='Selenium is not installed: pip install -e ".[book]"')

CHROMIUM = next(filter(None, map(shutil.which, ["chromium", "chromium-browser", "google-chrome"])), None)
DRIVER = shutil.which("chromedriver")
if CHROMIUM is None or DRIVER is None:
    pytest.skip(
        "headless Chromium and its driver are not installed (Debian: apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )

LECTURES = sorted((ROOT / "notebooks").glob("*.ipynb"))
EXERCISES = sorted((ROOT / "exercises").glob("*/*.ipynb"))
MATH = ".MathJax_CHTML, .MathJax, .MathJax_Display, .MathJax_SVG, mjx-container"

# One page's facts, gathered in the browser after its math is typeset.
PAGE_FACTS = """
const done = arguments[arguments.length - 1];
const FORMULA = '.math.notranslate';  // Sphinx's formula elements; MathJax puts its output inside each
const facts = () => ({
  title: document.title,
  links: Array.from(document.querySelectorAll('a[href]'), a => a.href),
  ids: Array.from(document.querySelectorAll('[id], a[name]'), e => e.id || e.name),
  images: Array.from(document.images, i => ({src: i.currentSrc || i.src, ok: i.complete && i.naturalWidth > 0,
                                             output: !!i.closest('.cell_output')})),
  resources: performance.getEntriesByType('resource').map(r => ({name: r.name, status: r.responseStatus})),
  math_sources: document.querySelectorAll(FORMULA).length,
  math_rendered: Array.from(document.querySelectorAll(FORMULA)).filter(e => e.querySelector(arguments[0])).length,
  math_errors: document.querySelectorAll('.merror, .MathJax_Error, [class*="noError"]').length,
  text: document.body.innerText,
});
// Pages with math: wait for MathJax to load and finish its first typesetting ("End" of its startup).
const ready = () => {
  if (!document.querySelector(FORMULA)) { done(facts()); }
  else if (window.MathJax && window.MathJax.Hub && window.MathJax.Hub.Register) {
    window.MathJax.Hub.Register.StartupHook('End', () => done(facts()));
  } else { setTimeout(ready, 100); }
};
ready();
"""


def _stored_figures(notebook: Path) -> int:
    """Image outputs stored in a notebook, an interactive cell's saved figure included."""
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    widget = "application/vnd.jupyter.widget-view+json"
    count = 0
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            count += "image/png" in data or "image/svg+xml" in data or "image/jpeg" in data or widget in data
    return count


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("book")
    html = out / "html"
    build = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-E", "-d", str(out / "doctrees"),
         "-c", "book", ".", str(html)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert build.returncode == 0, f"the book does not build:\n{build.stdout}\n{build.stderr}"
    return html


@pytest.fixture(scope="module")
def server(site):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,900", "--hide-scrollbars",
                # Offline on purpose: the book must need nothing from another site.
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]:  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))
    driver.set_script_timeout(60)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def pages(site, server, browser):
    """Every HTML page of the site, loaded in the browser: {path relative to the site: facts}."""
    paths = sorted(
        p.relative_to(site).as_posix() for p in site.rglob("*.html") if not p.relative_to(site).parts[0].startswith("_")
    )
    loaded = {}
    for path in paths:
        browser.get(server + path)
        loaded[path] = browser.execute_async_script(PAGE_FACTS, MATH)
    shots = os.environ.get("VITLOCAL_BOOK_SCREENSHOTS")
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        browser.get(server)  # the start page, through index.html's redirect
        browser.execute_async_script(PAGE_FACTS, MATH)
        browser.save_screenshot(str(Path(shots) / "start.png"))
        browser.get(server + "notebooks/01_lattice_view.html")
        browser.execute_async_script(PAGE_FACTS, MATH)
        browser.execute_script(
            "const f = document.querySelector('.cell_output img');"
            "const m = Array.from(document.querySelectorAll('.MathJax_Display'))"
            "  .filter(e => f && (e.compareDocumentPosition(f) & Node.DOCUMENT_POSITION_FOLLOWING)).pop();"
            "(m || f).scrollIntoView();"
        )
        browser.save_screenshot(str(Path(shots) / "lecture.png"))
    return loaded


def test_every_page_loads_with_its_resources(pages, server):
    expected = ["README.html", "docs/instructors.html", "index.html"]
    expected += [f"notebooks/{p.stem}.html" for p in LECTURES]
    expected += [f"exercises/{p.parent.name}/{p.stem}.html" for p in EXERCISES]
    assert set(expected) <= set(pages), f"pages missing from the book: {sorted(set(expected) - set(pages))}"
    for path, facts in pages.items():
        assert facts["title"], f"{path}: no title"
        # favicon.ico: asked for by the browser itself, not by the page
        failed = [r for r in facts["resources"] if r["status"] not in (200, 304) and "favicon.ico" not in r["name"]]
        assert not failed, f"{path}: resources that did not load: {failed}"
        outside = [r["name"] for r in facts["resources"] if not r["name"].startswith(server)]
        assert not outside, f"{path}: asks another site for {outside}"


def test_no_broken_internal_link_or_missing_image(pages, server, site):
    ids = {path: set(facts["ids"]) for path, facts in pages.items()}
    broken = []
    for path, facts in pages.items():
        broken += [f"{path}: image {img['src']}" for img in facts["images"] if not img["ok"]]
        for link in facts["links"]:
            if not link.startswith(server):
                continue
            target, fragment = urldefrag(link)
            rel = unquote(urlsplit(target).path).lstrip("/") or "index.html"
            if rel.endswith("/"):
                rel += "index.html"
            if rel in pages:
                if fragment and unquote(fragment) not in ids[rel]:
                    broken.append(f"{path}: {link} (no such anchor)")
                continue
            try:
                with urlopen(target) as response:
                    ok = response.status == 200
            except HTTPError:
                ok = False
            if not ok:
                broken.append(f"{path}: {link}")
    assert not broken, "broken internal links or missing images:\n" + "\n".join(sorted(set(broken)))


def test_math_is_typeset(pages):
    for path, facts in pages.items():
        if facts["math_sources"]:
            assert facts["math_rendered"] == facts["math_sources"], (
                f"{path}: {facts['math_rendered']} of {facts['math_sources']} formulas typeset"
            )
            assert facts["math_errors"] == 0, f"{path}: {facts['math_errors']} formulas MathJax could not read"
    for lecture in LECTURES:
        assert pages[f"notebooks/{lecture.stem}.html"]["math_rendered"] > 0, f"{lecture.name}: no math on its page"


def test_every_lecture_shows_its_figures(pages):
    with_figures = 0
    for lecture in LECTURES:
        stored = _stored_figures(lecture)
        shown = [img for img in pages[f"notebooks/{lecture.stem}.html"]["images"] if img["output"] and img["ok"]]
        assert len(shown) >= stored, f"{lecture.name}: {len(shown)} of its {stored} stored figures shown"
        with_figures += stored > 0
    mechanisms = [p for p in LECTURES if p.name[:2] in {"01", "02", "03", "04", "05", "06"}]
    assert len(mechanisms) == 6 and all(_stored_figures(p) for p in mechanisms), "lectures 01-06 must show figures"
    assert with_figures >= 6


def test_exercises_carry_no_solutions(pages):
    for exercise in EXERCISES:
        text = pages[f"exercises/{exercise.parent.name}/{exercise.stem}.html"]["text"]
        assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text, exercise.name
        assert "YOUR CODE HERE" in text or "YOUR ANSWER HERE" in text, f"{exercise.name}: no stub to fill in"
