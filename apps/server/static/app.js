"use strict";
const $ = (id) => document.getElementById(id);

function show(id, text) { $(id).textContent = text || ""; $(id).hidden = !text; }

async function getJSON(url, options) {
  const response = await fetch(url, options);
  let body = null;
  try { body = await response.json(); } catch (e) { /* not JSON: say the status below */ }
  if (!response.ok) {
    throw new Error((body && body.message) || `${response.status} ${response.statusText}`);
  }
  return body;
}

// Server-sent events from a fetch: `token` events go to onToken; resolves with the `done`
// event's answer, rejects with an `error` event's message.
async function readEvents(response, onToken) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) { throw new Error("the stream ended before the poem did"); }
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) { name = line.slice(7); }
        else if (line.startsWith("data: ")) { data += line.slice(6); }
      }
      const payload = JSON.parse(data);
      if (name === "token") { onToken(payload); }
      else if (name === "done") { reader.cancel(); return payload; }
      else if (name === "error") { throw new Error(payload.message); }
    }
  }
}

async function loadEmotions() {
  try {
    const [emotions, models] = await Promise.all([getJSON("/emotions"), getJSON("/models")]);
    const byEmotion = Object.fromEntries(models.models.map((m) => [m.emotion, m]));
    for (const name of emotions.emotions) {
      const m = byEmotion[name];
      const option = new Option(
        m ? `${name} (v${m.version}${m.champion ? "" : ", not promoted"})` : `${name} (no model)`,
        name);
      option.disabled = !m;
      $("emotion").append(option);
    }
    for (const name of emotions.emotions.filter((e) => e !== "neutral")) {
      const m = byEmotion[name];
      const option = new Option(m ? `${name} (v${m.version})` : `${name} (no model)`, name);
      option.disabled = !m;
      $("second").append(option);
    }
    // The conditional model only where one is registered (`emoverse train --mode
    // conditional` makes it), and with it the choice of the better of the two.
    if (models.conditional) {
      $("model").append(new Option(
        `the conditional model (v${models.conditional.version}, one for every emotion)`,
        "conditional"));
      $("model").append(new Option("whichever of the two writes it better", "best"));
    }
    const first = [...$("emotion").options].find((o) => !o.disabled);
    if (first) {
      first.selected = true;
    } else {
      show("error", "the registry holds no models yet");
    }
  } catch (e) {
    show("error", `cannot list the models: ${e.message}`);
  }
}

// The dial: the strength and the second emotion's weight show their values; neither applies
// to the neutral base, and the weight only with a second emotion.
function syncDial() {
  $("strength-value").textContent = $("strength").value;
  $("second-weight-value").textContent = $("second-weight").value;
  // Only the family's children are dialled or blended.
  const fixed = $("emotion").value === "neutral" || $("model").value !== "family";
  $("strength").disabled = fixed;
  $("second").disabled = fixed;
  $("second-weight").disabled = fixed || !$("second").value;
}
for (const id of ["strength", "second-weight", "emotion", "second", "model"]) {
  $(id).addEventListener("input", syncDial);
  $(id).addEventListener("change", syncDial);
}

// What to ask for: the emotion's own model, a dialled one, or a blend of two.
function modelPart() {
  const emotion = $("emotion").value;
  const strength = Number($("strength").value);
  const second = $("second").value;
  const model = $("model").value;
  if (model !== "family") { return { emotion, model }; }
  if (emotion === "neutral") { return { emotion }; }
  if (second && second !== emotion) {
    return { blend: { [emotion]: strength, [second]: Number($("second-weight").value) } };
  }
  return strength === 1 ? { emotion } : { emotion, strength };
}

// Form: exact lines, stanzas and a rhyme scheme (the server checks them: a 422 says what).
function formPart() {
  const part = {};
  if ($("lines").value) {
    part.lines = Number($("lines").value);
    // Enough tokens for every line (models/generation/form.py: 8 a line).
    part.max_new_tokens = Math.max(120, part.lines * 8 + 1);
  }
  if ($("stanzas").value) { part.stanzas = Number($("stanzas").value); }
  if ($("rhyme").value) { part.rhyme = $("rhyme").value; }
  return part;
}

$("form").addEventListener("submit", async (event) => {
  event.preventDefault();
  show("error", ""); show("warning", "");
  $("poem").textContent = ""; $("poem").dataset.pieces = 0; $("meta").textContent = "writing…";
  $("write").disabled = true;
  // A first line is a whole line: the model goes on from the next one.
  const line = $("first-line").value.trimEnd();
  const body = { ...modelPart(), ...formPart(), prompt: line ? line + "\n" : "" };
  try {
    // Streamed: the poem appears as it is written, then the final answer replaces it.
    const response = await fetch("/generate?stream=true", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    if (!response.ok) {
      let message = `${response.status} ${response.statusText}`;
      try { message = (await response.json()).message || message; } catch (e) { /* not JSON */ }
      throw new Error(message);
    }
    let pieces = 0;
    const result = await readEvents(response, (event) => {
      if (event.poem === 0) {
        $("poem").textContent += event.text;
        $("poem").dataset.pieces = ++pieces;  // how many pieces it arrived in
      }
    });
    $("poem").textContent = result.poems[0];
    const own = `${result.model} v${result.version}`;
    const who = result.recipe ? result.recipe.formula
      : result.model.endsWith("-conditional") ? `${own} as ${result.emotion}` : own;
    $("meta").textContent = `${who}, seed ${result.seed}`;
    show("warning", result.warning);
  } catch (e) {
    $("meta").textContent = "";
    show("error", e.message);
  } finally {
    $("write").disabled = false;
  }
});

loadEmotions().then(syncDial);
