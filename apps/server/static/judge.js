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
    // Every emotion's model is judged, champion or not: the tally says which.
    const which = m.emotion === "neutral" ? " (the base)" : m.champion ? "" : " (not promoted)";
    const readers = m.human_readers === 1 ? "1 reader" : `${m.human_readers} readers`;
    return `<tr><td>${m.emotion} v${m.version}${which}</td><td>${a.k} of ${a.n} by ${readers}</td>` +
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
