#!/usr/bin/env python3
"""Open every built chapter in headless Chromium and check that its figures really render.

    python scripts/check_book_pages.py                       # check _build/html
    python scripts/check_book_pages.py --screenshots shots/  # ... and save a screenshot of each page

For each page in ``_toc.yml`` the script serves ``_build/html`` on 127.0.0.1, loads
the page inside a same-origin frame in Chromium (``--headless --dump-dom``), lets
its scripts run, and reads back, for every ``<img>``: whether it finished loading
and its natural size. A page fails if any image did not load or is empty (0x0),
if a chapter that draws figures shows none, or if an image file it points to is
missing or empty on disk; and if any formula is left as raw TeX (MathJax is served
from the built site, see ``book/_ext/offline_mathjax.py``) or shows a TeX error;
if a saved widget is not drawn (the widget manager is served from the built site when
``scripts/fetch_widget_js.py`` has fetched it); and if a code cell is wider than the page's
code column in a 1280-pixel window.
Nothing is fetched from outside the machine.

Needs Debian's ``chromium`` (``apt-get install -y chromium``) or ``$CHROMIUM``.
Exit status: 0 all good, 1 a page failed, 2 Chromium or the build is missing.
"""

from __future__ import annotations

import argparse
import functools
import html
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_build import toc_files  # noqa: E402

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
]

# Pages whose notebooks draw no figure (they print commands and tables only).
NO_FIGURES = {"book/08_scaling_up", "book/status"}  # tables and text only

PROBE = """<!doctype html><html><body>
<iframe id="page" src="/{page}" style="width:1280px;height:30000px;border:0"></iframe>
<pre id="result">pending</pre>
<script>
function probe() {{
  var doc = document.getElementById('page').contentDocument;
  var out = {{title: doc.title, images: []}};
  doc.querySelectorAll('img').forEach(function (img) {{
    out.images.push({{src: img.getAttribute('src') || '', complete: img.complete,
                      width: img.naturalWidth, height: img.naturalHeight,
                      in_output: !!img.closest('.cell_output, .output')}});
  }});
  out.tracebacks = doc.querySelectorAll('.output.traceback, .traceback').length;
  // Widgets: every saved widget view is drawn by the widget manager (an output widget with
  // its figure), which needs the manager's JavaScript to have loaded.
  var views = doc.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]');
  out.widgets = views.length;
  out.blank_widgets = 0;
  views.forEach(function (v) {{
    if (!v.parentElement.querySelector('.jupyter-widgets')) {{ out.blank_widgets += 1; }}
  }});
  // Code: no code cell scrolls sideways at this width (the formatter's 88 columns fit).
  var code = doc.querySelectorAll('div.cell_input pre');
  out.code_cells = code.length;
  out.wide_code = [];
  code.forEach(function (pre) {{
    if (pre.scrollWidth > pre.clientWidth + 1) {{
      var longest = pre.textContent.split('\\n').reduce(function (a, b) {{ return b.length > a.length ? b : a; }}, '');
      out.wide_code.push(longest.trim().slice(0, 60));
    }}
  }});
  // Maths: every element MyST marks as maths must hold MathJax's rendering, not raw TeX.
  var maths = doc.querySelectorAll('span.math.notranslate, div.math.notranslate');  // MyST's, not MathJax's
  out.maths = maths.length;
  out.raw_maths = [];
  maths.forEach(function (el) {{
    if (!el.querySelector('.MathJax, .MathJax_Display, .MathJax_SVG, mjx-container')) {{
      out.raw_maths.push(el.textContent.trim().slice(0, 60));
    }}
  }});
  out.math_errors = [];
  doc.querySelectorAll('.MathJax .merror, .MathJax .noError, .MathJax [style*="color: red"]').forEach(
    function (el) {{ out.math_errors.push(el.textContent.trim().slice(0, 60)); }});
  document.getElementById('result').textContent = JSON.stringify(out);
}}
document.getElementById('page').addEventListener('load', function () {{
  var w = document.getElementById('page').contentWindow;
  if (w.MathJax && w.MathJax.Hub && w.MathJax.Hub.Register) {{  // MathJax 2: probe once it has typeset
    w.MathJax.Hub.Register.StartupHook('End', function () {{ setTimeout(probe, 300); }});
  }} else {{
    setTimeout(probe, 1500);
  }}
}});
</script></body></html>"""


def find_chromium() -> str | None:
    for name in (
        os.environ.get("CHROMIUM"),
        "chromium",
        "chromium-browser",
        "google-chrome",
    ):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def browser_and_build(html_dir: Path) -> tuple[str | None, str | None]:
    """Chromium's path, or what is missing to open the built pages in it (and how to fix it)."""
    binary = find_chromium()
    if binary is None:
        return (
            None,
            "chromium not found: apt-get install -y chromium (or set $CHROMIUM)",
        )
    if not html_dir.is_dir():
        return None, f"no built book in {html_dir}: run scripts/build_book.sh first"
    return binary, None


class _Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        parsed = urllib.parse.urlparse(self.path)
        if parsed.path == "/__probe__":
            page = urllib.parse.parse_qs(parsed.query)["page"][0]
            body = PROBE.format(page=html.escape(page)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()

    def log_message(self, *args):  # keep the output quiet
        pass


def serve(directory: Path):
    handler = functools.partial(_Handler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def chromium(binary: str, url: str, *extra: str, timeout: int = 90) -> str:
    cmd = [binary, *FLAGS, "--virtual-time-budget=5000", *extra, url]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return result.stdout


def check_page(
    binary: str, base: str, html_dir: Path, entry: str
) -> tuple[list[str], dict]:
    """Problems found on one page, and what the browser reported."""
    dom = chromium(
        binary,
        f"{base}/__probe__?page={urllib.parse.quote(entry + '.html')}",
        "--dump-dom",
    )
    match = re.search(r'<pre id="result">(.*?)</pre>', dom, flags=re.S)
    if not match or match.group(1).strip() == "pending":
        return [f"{entry}: the page did not finish loading in the browser"], {}
    report = json.loads(html.unescape(match.group(1)))
    problems = []
    figures = [im for im in report["images"] if im["in_output"]]
    for im in report["images"]:
        src = im["src"]
        if not im["complete"] or im["width"] == 0 or im["height"] == 0:
            problems.append(
                f"{entry}: image {src[:80]} did not load or is empty "
                f"({im['width']}x{im['height']})"
            )
        if not src.startswith("data:") and not src.startswith("http"):
            file = (html_dir / entry).parent / src.split("#")[0].split("?")[0]
            if not file.exists() or file.stat().st_size == 0:
                problems.append(
                    f"{entry}: image file {src} is missing or empty on disk"
                )
        elif src.startswith("data:") and len(src) < 100:
            problems.append(f"{entry}: inline image {src[:60]} is (nearly) empty")
    notebook = (ROOT / f"{entry}.ipynb").exists()
    if notebook and entry not in NO_FIGURES and not figures:
        problems.append(f"{entry}: a chapter that draws figures shows none")
    if report.get("raw_maths"):
        problems.append(
            f"{entry}: {len(report['raw_maths'])} of {report['maths']} formulas did not render "
            f"(first: {report['raw_maths'][0]!r}); the book serves MathJax itself when "
            "jupyter-server-mathjax is installed (pip install -e '.[book]'), see book/_ext"
        )
    if report.get("math_errors"):
        problems.append(
            f"{entry}: TeX errors in {len(report['math_errors'])} formula(s), "
            f"first: {report['math_errors'][0]!r}"
        )
    if report.get("blank_widgets"):
        problems.append(
            f"{entry}: {report['blank_widgets']} of {report['widgets']} widget(s) were not drawn; "
            "the pages load the widget manager from book/_static/widgets when it is there: run "
            "python scripts/fetch_widget_js.py (needs npm) and build again"
        )
    if report.get("wide_code"):
        problems.append(
            f"{entry}: {len(report['wide_code'])} code cell(s) scroll sideways in a 1280-pixel "
            f"window (first: {report['wide_code'][0]!r}); keep code to 88 columns "
            "(`ruff format`, and break long strings and comments by hand)"
        )
    if report.get("tracebacks"):
        problems.append(
            f"{entry}: {report['tracebacks']} error traceback(s) on the page"
        )
    return problems, report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--build",
        type=Path,
        default=ROOT / "_build",
        help="build folder (default: _build)",
    )
    parser.add_argument(
        "--screenshots",
        type=Path,
        default=None,
        help="save a PNG of each page into this folder",
    )
    parser.add_argument(
        "--pages",
        nargs="*",
        default=None,
        help="only these toc entries (e.g. book/06_full_loop)",
    )
    args = parser.parse_args(argv)
    html_dir = args.build / "html"
    binary, problem = browser_and_build(html_dir)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    server = serve(html_dir)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    all_problems = []
    try:
        for entry in args.pages or toc_files():
            problems, report = check_page(binary, base, html_dir, entry)
            n_fig = sum(im["in_output"] for im in report.get("images", []))
            status = "ok" if not problems else "FAIL"
            print(
                f"{status:4} {entry}: {n_fig} figure(s), {len(report.get('images', []))} image(s) loaded, "
                f"{report.get('maths', 0)} formula(s) rendered, "
                f"{report.get('code_cells', 0)} code cell(s) fit, "
                f"{report.get('widgets', 0) - report.get('blank_widgets', 0)} of "
                f"{report.get('widgets', 0)} widget(s) drawn, in Chromium"
            )
            all_problems += problems
            if args.screenshots is not None:
                args.screenshots.mkdir(parents=True, exist_ok=True)
                shot = (args.screenshots / (entry.replace("/", "_") + ".png")).resolve()
                chromium(
                    binary,
                    f"{base}/{entry}.html",
                    f"--screenshot={shot}",
                    "--window-size=1280,2400",
                )
    finally:
        server.shutdown()
    for p in all_problems:
        print("FAIL:", p, file=sys.stderr)
    return 1 if all_problems else 0


if __name__ == "__main__":
    sys.exit(main())
