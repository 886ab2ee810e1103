"""The judges over HTTP: the same answer as `emoverse judge --json`.

    POST /judge   {"poems": [poem, ...]} or {"text": "poems separated by blank lines, or JSONL"}
                  -> {judges, scores, poems: [{poem, text, judges: {judge: {label, scores,
                  valence}}}]} (emoverse/judges/answer.py)

GET /judge is the blind judging page (apps/server/page.py); this route shares its path, not its
method. Bad input is a 422 whose `message` names the problem in one line; a body over the
server's limit is a 413 before it is read.
"""

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from emoverse.errors import EmoverseError
from emoverse.judges.answer import MAX_POEMS, check_poems, judge_poems, parse_poems

router = APIRouter()


class JudgeBody(BaseModel):
    """The body of POST /judge: `poems` or `text`, not both; unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")

    poems: list[str] | None = Field(default=None, max_length=MAX_POEMS)
    text: str | None = None


# A plain function: FastAPI runs it in its thread pool, so judging (NADE reads each poem in
# milliseconds, and loads in seconds the first time) never blocks the event loop.
@router.post("/judge", response_model=None)
def judge_poems_route(body: JudgeBody) -> dict[str, Any] | JSONResponse:
    try:
        if (body.poems is None) == (body.text is None):
            raise EmoverseError("give either `poems` (a list of poems) or `text`, not both")
        poems = (
            check_poems(body.poems, source="poems")
            if body.poems is not None
            else parse_poems(body.text.encode("utf-8"), source="text")
        )
    except EmoverseError as exc:
        return JSONResponse(status_code=422, content={"message": str(exc)})
    return judge_poems(poems)
