"""The studio page: plain HTML + JS + CSS from incasa/serve/studio/, served by the same app (no build step).

GET / redirects to /studio. The page talks to the same public API as any client (/v1/models,
/v1/images/generations with stream + partial_images, /v1/images/edits), sending the API key the user typed.
"""

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

STUDIO_DIR = Path(__file__).resolve().parent.parent / "studio"


def mount(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    async def root():
        return RedirectResponse("/studio")

    @app.get("/studio", include_in_schema=False)
    async def studio():
        return FileResponse(STUDIO_DIR / "index.html", media_type="text/html")

    app.mount("/studio/static", StaticFiles(directory=STUDIO_DIR), name="studio-static")
