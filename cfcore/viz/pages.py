"""Self-contained HTML pages of Altair charts: one chart, or a report of several in one page.

Every page carries Vega, Vega-Lite and vega-embed inside it (bundled by `vl-convert-python`, the
library Altair itself uses for `inline=True`), so it renders with no network: offline, behind a
firewall, or archived beside a paper. The bundle is about 900 KB; a report pays for it once
however many charts it holds, which is why the commands write one `report.html` per run rather
than one page per chart.

Each chart's Vega-Lite spec sits in its own `<script type="application/json">` element, so
`read_page` can give the specs back (to tests, or to anyone who wants the data of a page).
Charts are drawn as SVG: marks and axes are elements of the page, which a browser test can count.
"""

from __future__ import annotations

import functools
import html
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ArgumentTypeError, ArgumentValueError, MissingDependencyError
from ..io.atomic import atomic_write

# What vega-embed is told for every chart: SVG (so marks and axes are DOM elements), and only the
# menu actions that work offline (the "Open in Vega Editor" action needs the network).
EMBED_OPTIONS: dict[str, Any] = {
    "renderer": "svg",
    "actions": {"export": True, "source": True, "compiled": False, "editor": False},
}

_CDN = "https://cdn.jsdelivr.net/npm"

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #222; }
h1 { font-size: 1.5em; margin: 0 0 4px; }
h2 { font-size: 1.15em; margin: 28px 0 8px; }
p.intro { color: #555; margin: 0 0 12px; max-width: 70em; }
.cfcore-chart { margin: 4px 0 12px; }
.cfcore-error { color: #b00; white-space: pre-wrap; }
"""

# Draws every spec of the page into its target; a chart that fails says so where it would be.
_RENDER = """
for (const el of document.querySelectorAll("script.cfcore-spec")) {
  const target = document.getElementById(el.dataset.target);
  vegaEmbed(target, JSON.parse(el.textContent), %s).catch((err) => {
    target.innerHTML = "";
    target.className = "cfcore-error";
    target.textContent = "this chart failed to render: " + err;
    console.error(err);
  });
}
"""


def _vl_version() -> str | None:
    """The Vega-Lite version Altair writes specs for, in vl-convert's spelling (e.g. `v6_4`)."""
    try:
        from altair.utils._importers import vl_version_for_vl_convert

        return vl_version_for_vl_convert()
    except ImportError:  # a future Altair without the helper: vl-convert's newest version
        return None


@functools.cache
def javascript_bundle() -> str:
    """Vega, Vega-Lite and vega-embed as one script, built once per process by vl-convert.

    Raises:
        ImportError: `vl-convert-python` is not installed (it is one of cfcore's dependencies).
    """
    try:
        import vl_convert
    except ImportError as err:
        raise MissingDependencyError(
            "writing a self-contained HTML page needs vl-convert-python (a dependency of cfcore): "
            "pip install vl-convert-python"
        ) from err
    # The stub marks `snippet` as required; the function's default snippet is what we want.
    return vl_convert.javascript_bundle(vl_version=_vl_version())  # pyright: ignore[reportCallIssue]


def _spec(chart: Any, what: str) -> dict[str, Any]:
    if isinstance(chart, dict):
        return chart
    if not hasattr(chart, "to_dict"):
        raise ArgumentTypeError(
            f"{what} is a {type(chart).__name__}; expected an Altair chart or a spec"
        )
    return chart.to_dict()


def _script_json(spec: dict[str, Any]) -> str:
    # `</` inside a string would end the <script> element early; `<\/` is the same JSON string.
    return json.dumps(spec).replace("</", "<\\/")


def page_html(
    charts: Sequence[tuple[str, Any]],
    *,
    title: str,
    intro: str = "",
    inline: bool = True,
    headings: bool = True,
) -> str:
    """One HTML page drawing `charts` one under the other.

    Args:
        charts: `(heading, chart)` pairs; a chart is an Altair chart or a Vega-Lite spec dict.
        title: the page's title (and its first heading when `headings`).
        intro: a paragraph under the title (plain text).
        inline: put the JavaScript in the page (works offline). False loads it from a CDN
            (`cdn.jsdelivr.net`), as Altair's default pages do: much smaller, blank offline.
        headings: write the title and one heading per chart.

    Returns:
        The page's text.
    """
    if not charts:
        raise ArgumentValueError("a page needs at least one chart, got none")
    if inline:
        scripts = f"<script>\n{javascript_bundle()}\n</script>"
    else:
        import altair as alt

        vega_lite = alt.SCHEMA_VERSION.lstrip("v")
        scripts = "\n".join(
            f'<script src="{_CDN}/{lib}"></script>'
            for lib in ("vega@6", f"vega-lite@{vega_lite}", "vega-embed@7")
        )
    body = []
    if headings:
        body.append(f"<h1>{html.escape(title)}</h1>")
        if intro:
            body.append(f'<p class="intro">{html.escape(intro)}</p>')
    for i, (heading, chart) in enumerate(charts):
        spec = _spec(chart, f"chart {heading!r}")
        if headings:
            body.append(f"<h2>{html.escape(heading)}</h2>")
        body.append(f'<div class="cfcore-chart" id="chart-{i}"></div>')
        body.append(
            f'<script type="application/json" class="cfcore-spec" data-target="chart-{i}" '
            f'data-heading="{html.escape(heading, quote=True)}">{_script_json(spec)}</script>'
        )
    render = _RENDER % json.dumps(EMBED_OPTIONS)
    return (
        '<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n{scripts}\n</head>\n"
        "<body>\n" + "\n".join(body) + f"\n<script>{render}</script>\n</body>\n</html>\n"
    )


def save_report(
    charts: Sequence[tuple[str, Any]],
    path: str | os.PathLike[str],
    *,
    title: str,
    intro: str = "",
    inline: bool = True,
) -> Path:
    """Writes several charts into one self-contained HTML page, atomically.

    Args:
        charts: `(heading, chart)` pairs, drawn in order under their headings.
        path: where to write (a `.html` path).
        title: the page's title.
        intro: a paragraph under the title.
        inline: see `page_html` (keep the default: False gives a page that is blank offline).

    Returns:
        The path written.
    """
    path = Path(path)
    if path.suffix.lower() != ".html":
        raise ArgumentValueError(f"cannot save a report as {path.name!r}: expected a .html path")
    text = page_html(charts, title=title, intro=intro, inline=inline)
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


_SPEC_TAG = re.compile(
    r'<script type="application/json" class="cfcore-spec" data-target="[^"]*" '
    r'data-heading="([^"]*)">(.*?)</script>',
    re.DOTALL,
)


def read_page(path: str | os.PathLike[str]) -> list[tuple[str, dict[str, Any]]]:
    """The `(heading, Vega-Lite spec)` pairs of a page written by `save_chart` or `save_report`.

    Raises:
        ValueError: the file holds no cfcore chart.
    """
    text = Path(path).read_text(encoding="utf-8")
    found = [(html.unescape(h), json.loads(s)) for h, s in _SPEC_TAG.findall(text)]
    if not found:
        raise ArgumentValueError(
            f"{path} holds no chart written by cfcore (no cfcore-spec element)"
        )
    return found


def chart_title(chart: Any, default: str) -> str:
    """The chart's own title when it has a plain one, else `default`."""
    t = _spec(chart, "chart").get("title")
    if isinstance(t, dict):
        t = t.get("text")
    return t if isinstance(t, str) and t else default
