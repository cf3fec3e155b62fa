"""The review inspector: the static page at ``GET /`` that draws ``POST /v1/explain`` answers.

Four files shipped as package data (``serve/rest/static/``: ``index.html``, ``inspector.js``,
``inspector.css``, ``favicon.png``; plain HTML, JS and CSS, no build step, nothing fetched from
other hosts), read
once when the app is built and answered from memory. The page holds no data, so its files need
no token; the page sends the token a user types to ``/v1/explain`` (docs/security.md).

Every answer carries a Content-Security-Policy that only lets the page load and call its own
origin (no inline script, no frames), ``X-Content-Type-Options: nosniff`` and ``no-cache`` (the
page is revalidated after an upgrade).
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

# URL path -> (file under static/, Content-Type)
FILES = {"/": ("index.html", "text/html"),
         "/inspector/inspector.js": ("inspector.js", "text/javascript"),
         "/inspector/inspector.css": ("inspector.css", "text/css"),
         "/inspector/favicon.png": ("favicon.png", "image/png")}
PATHS = frozenset(FILES)
HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                                "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def read_file(name: str) -> bytes:
    """One of the page's files (UTF-8 bytes), from the installed package; OSError if it is missing."""
    return resources.files("serve.rest").joinpath("static", name).read_bytes()


def routes() -> list[web.RouteDef]:
    """``GET`` (and ``HEAD``) routes answering the page's files from memory."""
    defs = []
    for path, (name, content_type) in FILES.items():
        body = read_file(name)

        async def answer(request: web.Request, body: bytes = body, content_type: str = content_type) -> web.Response:
            return web.Response(body=body, content_type=content_type, headers=HEADERS,
                                charset=None if content_type.startswith("image/") else "utf-8")

        defs.append(web.get(path, answer))
    return defs
