"""DOT text to a picture (SVG or PNG) by Graphviz's `dot` program, through the `graphviz`
Python binding; the formats `graph` writes, and where."""

from __future__ import annotations

from pathlib import Path

from lab.model.errors import BadInput, EnvironmentProblem

FORMATS = ("svg", "png", "dot", "mermaid")
SUFFIX = {"svg": ".svg", "png": ".png", "dot": ".dot", "mermaid": ".mmd"}
RENDERED = ("svg", "png")  # the formats Graphviz draws; dot and mermaid are text


def format_for(fmt: str | None, output: Path | None) -> str:
    """The output format: --format, else the output file's suffix, else DOT text. A
    --format that contradicts the file's suffix, or an unknown one, is bad input."""
    by_suffix = {v: k for k, v in SUFFIX.items()} | {".gv": "dot", ".mermaid": "mermaid"}
    if fmt is not None and fmt not in FORMATS:
        raise BadInput(f"unknown --format '{fmt}' (formats: {', '.join(FORMATS)})")
    guessed = by_suffix.get(output.suffix.lower()) if output is not None else None
    if fmt is None:
        if output is not None and guessed is None:
            raise BadInput(f"-o {output}: cannot tell the format from its name; give --format "
                           f"({', '.join(FORMATS)}) or a name ending in "
                           f"{', '.join(SUFFIX.values())}")
        fmt = guessed or "dot"
    elif guessed is not None and guessed != fmt:
        raise BadInput(f"-o {output} names a {guessed} file but --format is {fmt}")
    if fmt in RENDERED and output is None:
        raise BadInput(f"--format {fmt} is a picture: give a file to write with -o FILE")
    return fmt


def check_output(path: Path | None) -> None:
    """The -o path, checked before anything is drawn: not a directory, in an existing
    directory."""
    if path is None:
        return
    if path.is_dir():
        raise BadInput(f"-o {path} is a directory; give a file path")
    if not path.parent.is_dir():
        raise BadInput(f"-o {path}: the directory {path.parent} does not exist")
    if path.exists() and not path.is_file():
        raise BadInput(f"-o {path} exists and is not a regular file")


def render(dot_text: str, fmt: str) -> bytes:
    """Graphviz's picture of `dot_text` in `fmt` (svg or png)."""
    import graphviz

    try:
        return graphviz.Source(dot_text).pipe(format=fmt, engine="dot")
    except graphviz.ExecutableNotFound as exc:
        raise EnvironmentProblem("Graphviz's `dot` program is missing: install the Debian "
                                 "package graphviz (`sudo make install` does)") from exc
    except graphviz.CalledProcessError as exc:
        raise EnvironmentProblem(f"Graphviz's `dot` failed: {exc.stderr!r}") from exc
