"""Jinja2 environment for daemon config templates (lab/render/templates/)."""

from __future__ import annotations

from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

_env = Environment(loader=PackageLoader("lab.render", "templates"), undefined=StrictUndefined,
                   keep_trailing_newline=True, trim_blocks=False, lstrip_blocks=False,
                   autoescape=False)


def render(template: str, **context: Any) -> str:
    return _env.get_template(template).render(**context)
