"""`GET /`: a page where a person chooses or drops images and sees what the model says.

One self-contained HTML file (`static/page.html`, inline CSS and JS, no CDN: it works with no internet) that calls
the public `POST /predict` — with the model, version, label, top_k and API key the person gives — and shows each
image's top-k labels as bars, the model version and the latency, or the API's error message as it is worded.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(tags=["page"])
PAGE_FILE = "page.html"


@cache
def page_html() -> str:
    return resources.files("service.gateway.http").joinpath("static", PAGE_FILE).read_text(encoding="utf-8")


@router.get(
    "/",
    summary="A page to try a prediction in a browser",
    response_class=HTMLResponse,
    responses={200: {"description": "the page (HTML, all assets inline)", "content": {"text/html": {}}}},
)
async def page() -> HTMLResponse:
    return HTMLResponse(page_html(), headers={"Cache-Control": "no-cache"})
