"""The package format guide, served by the node so a refused package can link to it.

The page renders ``docs/algorithm-packages.md`` (packaged as ``data/algorithm-packages.md``, a
link to the same file, so the guide in the repository and the one a node serves are one text)."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from markdown_it import MarkdownIt

from pair.algorithms.manifest import manifest_json_schema
from pair.audit.service import Actor
from pair.web.deps import page_actor
from pair.web.templating import render

router = APIRouter(include_in_schema=False)
FORMAT_PAGE = "/algorithms/format"
SCHEMA_PAGE = "/algorithms/format/schema.json"
# the guide's links between files of docs/, as the node serves them
_LINKS = {"algorithm-package.schema.json": SCHEMA_PAGE, "usecases.md": "/usecases"}
_HREF = re.compile(r'href="([^"#:]+)(#[^"]*)?"')


@cache
def format_guide_html() -> str:
    """The guide as HTML, with links to sibling docs pointed at the node's own pages."""
    text = resources.files("pair.algorithms").joinpath("data/algorithm-packages.md").read_text()
    html = MarkdownIt("commonmark").enable("table").render(text)
    return _HREF.sub(
        lambda m: f'href="{_LINKS.get(m.group(1), m.group(1))}{m.group(2) or ""}"', html
    )


@router.get(FORMAT_PAGE)
def package_format(request: Request, _: Actor = Depends(page_actor)) -> Response:
    """Every member may read how to write a package (it holds no facility data)."""
    return render(request, "algorithms/format.html", {"guide": format_guide_html()})


@router.get(SCHEMA_PAGE)
def package_schema(_: Actor = Depends(page_actor)) -> Response:
    """The manifest's JSON Schema, as the guide links it."""
    return JSONResponse(manifest_json_schema())
