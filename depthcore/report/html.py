"""Self-contained HTML pages: one report per sweep (figures embedded as base64 PNG) and an index."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 80em; color: #222; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.85em; }
th, td { border-bottom: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; }
th { border-bottom: 2px solid #444; }
td:first-child, th:first-child { text-align: left; }
figure { margin: 1em 0; } img { max-width: 100%; }
.legend, .note { font-size: 0.85em; color: #555; }
"""

PAGE = jinja2.Template(
    """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{ title }}</title>
<style>{{ style }}</style>
</head>
<body>
<h1>{{ title }}</h1>
{% for line in summary %}<p class="summary">{{ line }}</p>
{% endfor %}<nav>{% for section in sections %}
<a href="#{{ section.anchor }}">{{ section.title }}</a>{{ " ·" if not loop.last }}
{%- endfor %}</nav>
{% for section in sections %}
<section id="{{ section.anchor }}">
<h2>{{ section.title }}</h2>
{% for note in section.notes %}<p class="note">{{ note }}</p>
{% endfor %}{% for table in section.tables %}{% if table.caption %}<h3>{{ table.caption }}</h3>
{% endif %}{{ table.html | safe }}
{% if table.legend %}<p class="legend">{{ table.legend }}</p>
{% endif %}{% endfor %}{% for fig in section.figures %}<figure id="fig-{{ fig.stem }}">
<img alt="{{ fig.caption }}" src="data:image/png;base64,{{ fig.data }}">
<figcaption>{{ fig.caption }}</figcaption>
</figure>
{% endfor %}</section>
{% endfor %}
</body>
</html>
""",
    autoescape=True,
)

INDEX = jinja2.Template(
    """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>depthsweep reports</title>
<style>{{ style }}</style>
</head>
<body>
<h1>depthsweep reports</h1>
{% if entries %}<ul>
{% for entry in entries %}<li><a href="{{ entry.href }}">{{ entry.name }}</a>
{%- if entry.summary %}: {{ entry.summary }}{% endif %}</li>
{% endfor %}</ul>
{% else %}<p class="note">No reports yet.</p>
{% endif %}</body>
</html>
""",
    autoescape=True,
)


@dataclass(frozen=True)
class Table:
    html: str  # rendered by pandas (DataFrame.to_html / Styler.to_html)
    caption: str = ""
    legend: str = ""


@dataclass(frozen=True)
class FigureRef:
    stem: str
    caption: str
    png: Path

    @property
    def data(self) -> str:
        return base64.b64encode(self.png.read_bytes()).decode("ascii")


@dataclass
class Section:
    anchor: str
    title: str
    tables: list[Table] = field(default_factory=list)
    figures: list[FigureRef] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def render_report(title: str, summary: list[str], sections: list[Section]) -> str:
    """One sweep's page; sections without content are left out."""
    shown = [s for s in sections if s.tables or s.figures or s.notes]
    return PAGE.render(title=title, summary=summary, sections=shown, style=STYLE)


def render_index(entries: list[dict[str, str]]) -> str:
    """The index page: one link per sweep report (entries: name, href, summary)."""
    return INDEX.render(entries=entries, style=STYLE)
