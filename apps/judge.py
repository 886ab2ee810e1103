"""Blind human judging for `emoverse serve`: does the emotion reach a reader?

    GET  /judge         a page: a poem by a champion chosen at random, its emotion hidden;
                        the reader picks one of the nine labels, then sees the answer
    GET  /judge/poem    {poem_id, poem}: the next poem to judge
    POST /judgements    {poem_id, guess} -> {correct, emotion, version, human_accuracy}

The server remembers which model wrote each poem it handed out (the last PENDING_MAX), so the
page never sees the emotion before the guess. Answers go to the judgements store, one
transaction each, and the model version's accuracy is recorded in the registry as a metric.
"""

import secrets
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from emoverse.emotions import LABELS
from emoverse.errors import NoModelError
from emoverse.judgements import Judgement, JudgementStore
from models.registry.model_registry import CHAMPION, ModelRecord, ModelRegistry

PENDING_MAX = 1024  # poems handed out and not yet judged, newest kept


class JudgementBody(BaseModel):
    """The body of POST /judgements; unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")

    poem_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    guess: Literal[LABELS]  # type: ignore[valid-type]


def add_judging(
    app: FastAPI,
    models: Any,  # apps.serve.ModelCache
    store: JudgementStore,
    write_one: Callable[[str, Request], Awaitable[tuple[ModelRecord, str]]],
    writer: Callable[[], ModelRegistry],
) -> None:
    """Add the judging page and its two endpoints to `app`. `writer` gives a registry that
    may write (the server's own reads without the writers' lock)."""
    pending: OrderedDict[str, tuple[str, int, str]] = OrderedDict()
    lock = threading.Lock()

    def champions() -> list[str]:
        found = []
        for label in LABELS:
            try:
                record, _ = models.current(label)
            except NoModelError:
                continue
            if CHAMPION in record.aliases:
                found.append(label)
        return found

    @app.get("/judge", response_class=HTMLResponse)
    def judge_page() -> str:
        return JUDGE_PAGE

    @app.get("/judge/poem")
    async def poem_to_judge(request: Request) -> dict[str, str]:
        labels = await run_in_threadpool(champions)
        if not labels:
            raise NoModelError("no champion to judge yet; run `emoverse run` first")
        record, poem = await write_one(secrets.choice(labels), request)
        poem_id = secrets.token_urlsafe(12)
        with lock:
            pending[poem_id] = (record.emotion, record.version, poem)
            while len(pending) > PENDING_MAX:
                pending.popitem(last=False)
        return {"poem_id": poem_id, "poem": poem}

    @app.post("/judgements", response_model=None)
    def judge(body: JudgementBody) -> dict[str, Any] | JSONResponse:
        with lock:
            handed_out = pending.pop(body.poem_id, None)
        if handed_out is None:
            message = "poem_id: unknown, or already judged; ask GET /judge/poem for a poem"
            return JSONResponse(status_code=422, content={"message": message})
        emotion, version, poem = handed_out
        store.add(Judgement(emotion, version, body.guess, poem))
        share = store.accuracy()[(emotion, version)]
        writer().record_human_accuracy(emotion, version, share)
        return {
            "correct": body.guess == emotion,
            "emotion": emotion,
            "version": version,
            "human_accuracy": share.to_dict(),
        }


JUDGE_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>emoverse: which emotion?</title>
<style>
  body { font-family: Georgia, serif; max-width: 40rem; margin: 2rem auto; padding: 0 1rem;
         color: #222; background: #fdfcf8; }
  #poem { white-space: pre-wrap; font: 1.1rem/1.5 Georgia, serif; margin: 1.5rem 0; }
  #labels button { font-size: 1rem; padding: .3rem .6rem; margin: .2rem; }
  #answer { font: 1rem sans-serif; }
  #error { color: #b00020; font: .9rem sans-serif; }
  table { border-collapse: collapse; font: .9rem sans-serif; margin-top: 1rem; }
  td, th { padding: .2rem .6rem; border-bottom: 1px solid #ddd; text-align: left; }
</style>
</head>
<body>
<h1>Which emotion?</h1>
<p>A model trained on one emotion wrote this poem. Which one?</p>
<pre id="poem" aria-live="polite"></pre>
<div id="labels"></div>
<p id="answer" aria-live="polite"></p>
<button id="next" hidden>Next poem</button>
<p id="error" role="alert" hidden></p>
<p id="score"></p>
<table><thead><tr><th>model</th><th>readers right</th><th>95% interval</th></tr></thead>
<tbody id="tally"></tbody></table>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const LABELS = ["anger", "anticipation", "disgust", "fear", "joy", "sadness", "surprise",
                "trust", "neutral"];
let poemId = null, judged = 0, right = 0;

async function getJSON(url, options) {
  const response = await fetch(url, options);
  let body = null;
  try { body = await response.json(); } catch (e) { /* not JSON */ }
  if (!response.ok) {
    throw new Error((body && body.message) || `${response.status} ${response.statusText}`);
  }
  return body;
}

function fail(error) { $("error").textContent = error.message; $("error").hidden = false; }

async function nextPoem() {
  $("answer").textContent = ""; $("next").hidden = true; $("error").hidden = true;
  $("poem").textContent = "…";
  for (const button of $("labels").children) { button.disabled = true; }
  try {
    const got = await getJSON("/judge/poem");
    poemId = got.poem_id;
    $("poem").textContent = got.poem;
    for (const button of $("labels").children) { button.disabled = false; }
  } catch (error) { $("poem").textContent = ""; fail(error); }
}

async function guess(label) {
  for (const button of $("labels").children) { button.disabled = true; }
  try {
    const got = await getJSON("/judgements", {
      method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({poem_id: poemId, guess: label}),
    });
    judged += 1; right += got.correct ? 1 : 0;
    $("answer").textContent = (got.correct ? "Right: " : "No: ") +
      `it was ${got.emotion} (emoverse-${got.emotion} v${got.version}).`;
    $("score").textContent = `You: ${right} of ${judged} right.`;
    $("next").hidden = false;
    await tally();
  } catch (error) { fail(error); }
}

async function tally() {
  const got = await getJSON("/models");
  const rows = got.models.filter((m) => m.human_accuracy).map((m) => {
    const a = m.human_accuracy;
    const pct = (x) => `${Math.round(100 * x)}%`;
    return `<tr><td>${m.emotion} v${m.version}</td><td>${a.k} of ${a.n}</td>` +
      `<td>${pct(a.low)}–${pct(a.high)}</td></tr>`;
  });
  $("tally").innerHTML = rows.join("");
}

for (const label of LABELS) {
  const button = document.createElement("button");
  button.textContent = label; button.dataset.label = label; button.disabled = true;
  button.addEventListener("click", () => guess(label));
  $("labels").appendChild(button);
}
$("next").addEventListener("click", nextPoem);
nextPoem(); tally().catch(fail);
</script>
</body>
</html>
"""
