"""The pages: static files under apps/server/static, served as they are.

    GET  /           index.html (app.js, style.css): choose an emotion, type a first line,
                     read the poem as it is written
    GET  /judge      judge.html (judge.js, judge.css): blind human judging (apps/server/judging.py)
    GET  /static/*   the pages' scripts and styles

The strength sliders stop at FLUENT_MAX_STRENGTH, written into index.html once at import.
"""

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from models.generation.blend import FLUENT_MAX_STRENGTH

STATIC = Path(__file__).parent / "static"
PAGE = (
    (STATIC / "index.html")
    .read_text(encoding="utf-8")
    .replace("__FLUENT_MAX__", f"{FLUENT_MAX_STRENGTH:g}")
)
JUDGE_PAGE = (STATIC / "judge.html").read_text(encoding="utf-8")

router = APIRouter()


@router.get("/", response_class=HTMLResponse)
async def page() -> str:
    return PAGE


@router.get("/judge", response_class=HTMLResponse)
async def judge_page() -> str:
    return JUDGE_PAGE


def static_files() -> StaticFiles:
    """The pages' scripts and styles, mounted at /static."""
    return StaticFiles(directory=STATIC)
