// The Draw tab: a canvas drawn on with mouse, pen or touch (pointer events), the prediction asked for
// while drawing (one request in flight at a time; the newest drawing is sent when it answers), the ten
// outputs, the 28x28 input the network saw, the hidden units and a unit's incoming weights.
// The canvas holds 140x140 pixels shown at 280x280: five times MNIST's 28 is ample for a digit that is
// scaled into 20x20, and a quarter of the pixels makes the PNG decoded on every stroke 4x cheaper.
import { getJSON, modelURL, postJSON, say } from "./api.js";
import { activationColour, drawGray, drawWeights } from "./pictures.js";

const canvas = document.getElementById("canvas");
const ctx = canvas.getContext("2d");
let model = null, inked = false, inFlight = false, dirty = false, last = null;
const unitCache = new Map();

function clear() {
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  inked = false; dirty = false;
  document.getElementById("prediction").textContent = "?";
  document.getElementById("bars").replaceChildren();
  document.getElementById("hidden").replaceChildren();
  document.getElementById("timing").textContent = "";
  drawGray(document.getElementById("input28"), new Array(784).fill(0));
}

function stroke(from, to) {
  ctx.strokeStyle = "#fff"; ctx.lineWidth = 9; ctx.lineCap = "round"; ctx.lineJoin = "round";
  ctx.beginPath(); ctx.moveTo(from.x, from.y); ctx.lineTo(to.x, to.y); ctx.stroke();
  inked = true;
  ask();
}

function point(event) {
  const box = canvas.getBoundingClientRect();
  return { x: (event.clientX - box.left) * canvas.width / box.width, y: (event.clientY - box.top) * canvas.height / box.height };
}

canvas.addEventListener("pointerdown", (event) => {
  canvas.setPointerCapture(event.pointerId);
  last = point(event);
  stroke(last, { x: last.x + 0.01, y: last.y });
});
canvas.addEventListener("pointermove", (event) => {
  if (last === null) return;
  const here = point(event);
  stroke(last, here);
  last = here;
});
for (const kind of ["pointerup", "pointercancel"]) canvas.addEventListener(kind, () => { last = null; });

// Ask for a prediction of the drawing as it is now; while one is on its way, remember to ask again.
async function ask() {
  if (!model || !inked) return;
  if (inFlight) { dirty = true; return; }
  inFlight = true; dirty = false;
  const started = performance.now();
  try {
    const result = await postJSON("/api/predict", { model, png: canvas.toDataURL("image/png") });
    show(result);
    const ms = performance.now() - started;
    document.getElementById("timing").textContent = `answered in ${ms.toFixed(0)} ms`;
    canvas.dataset.roundtripMs = ms.toFixed(1);
    canvas.dataset.answers = String(Number(canvas.dataset.answers || 0) + 1);
    window.roundtripsMs = [...(window.roundtripsMs || []).slice(-9999), ms];  // read by benchmarks/bench_serve.py --browser
    say("");
  } catch (error) {
    say(error.message);
  } finally {
    inFlight = false;
    if (dirty) ask();
  }
}

function show(result) {
  document.getElementById("prediction").textContent = String(result.digit);
  document.getElementById("score-meaning").textContent =
    result.score === "probability" ? "softmax probabilities (they sum to 1)"
      : "sigmoid outputs, each in 0..1 (not probabilities: they need not sum to 1)";
  const bars = result.outputs.flatMap((value, digit) => {
    const label = document.createElement("span"); label.textContent = digit;
    const bar = document.createElement("div");
    bar.className = digit === result.digit ? "bar best" : "bar";
    bar.style.width = `${(100 * value).toFixed(1)}%`;
    const number = document.createElement("span"); number.textContent = value.toFixed(3);
    return [label, bar, number];
  });
  document.getElementById("bars").replaceChildren(...bars);
  drawGray(document.getElementById("input28"), result.input28);
  showHidden(result);
}

function showHidden(result) {
  const box = document.getElementById("hidden");
  const cells = [];
  result.hidden.forEach((layer, l) => {
    const top = Math.max(...layer, 1e-9);
    layer.forEach((a, k) => {
      const cell = document.createElement("div");
      cell.className = "unit";
      cell.style.background = activationColour(a, result.activation, top);
      cell.title = `layer ${l + 1}, unit ${k}: ${result.activation} activation ${a.toFixed(3)}`;
      if (l === 0) cell.addEventListener("pointerenter", () => showUnit(k, cell));
      cells.push(cell);
    });
    if (l < result.hidden.length - 1) cells.push(Object.assign(document.createElement("div"), { style: "flex-basis:100%" }));
  });
  box.replaceChildren(...cells);
  const shown = result.hidden.map((h) => h.length).join(" + ");
  const sizes = result.hidden_sizes.join(" + ");
  document.getElementById("hidden-note").textContent =
    `(${result.activation}; ${shown === sizes ? sizes : `${shown} of ${sizes}`} units)`;
}

async function showUnit(k, cell) {
  document.querySelectorAll(".unit.pointed").forEach((c) => c.classList.remove("pointed"));
  cell.classList.add("pointed");
  const key = `${model}#${k}`;
  try {
    if (!unitCache.has(key)) unitCache.set(key, await getJSON(`${modelURL(model)}/units/${k}`));
    const unit = unitCache.get(key);
    drawWeights(document.getElementById("unit"), unit.weights, unit.largest);
    document.getElementById("unit-note").textContent =
      `unit ${k} of the first hidden layer: its incoming weights (largest |w| ${unit.largest.toFixed(2)}, bias ${unit.bias.toFixed(2)}); red excites it, blue inhibits it`;
  } catch (error) {
    say(error.message);
  }
}

export function useModel(id) {
  model = id;
  unitCache.clear();
  ask();
}

document.getElementById("clear").addEventListener("click", clear);
clear();
