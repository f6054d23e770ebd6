"""HTML and Markdown reports from Jinja2 templates in ``propensity/templates/`` (one per report)."""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("propensity", "templates"),
        # HTML templates escape every value; Markdown ones render text as it is.
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default_for_string=False),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["num"] = fmt_number
    return env


def fmt_number(value: Any, digits: int = 4) -> str:
    """A float to ``digits`` decimals (below 0.001: 3 significant digits); other values as text."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if value != 0 and abs(value) < 1e-3:
            return f"{value:.3g}"
        return f"{value:.{digits}f}"
    if value is None:
        return "–"
    return str(value)


def render(name: str, **context: Any) -> str:
    """Render ``templates/<name>`` with ``context``."""
    return _environment().get_template(name).render(**context)
