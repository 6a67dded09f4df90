// The Explore tab: the chosen model's test accuracy, confusion matrix (a cell clicked shows its test
// images), most confident mistakes and learning curve.
import { getJSON, modelURL, say } from "./api.js";
import { drawCurve, drawGray } from "./pictures.js";

let shownFor = null, wanted = null;

function gallery(title, items, caption) {
  document.getElementById("cell-title").textContent = title;
  document.getElementById("gallery").replaceChildren(...items.map((item) => {
    const figure = document.createElement("figure");
    const picture = Object.assign(document.createElement("canvas"), { width: 28, height: 28, className: "pixels" });
    drawGray(picture, item.pixels);
    const text = document.createElement("figcaption");
    text.textContent = caption(item);
    figure.append(picture, text);
    return figure;
  }));
}

function matrix(result) {
  const table = document.getElementById("confusion");
  const n = result.confusion_matrix.length;
  const head = document.createElement("tr");
  head.append(document.createElement("th"), ...Array.from({ length: n }, (_, p) => Object.assign(document.createElement("th"), { textContent: p })));
  const largestWrong = Math.max(1, ...result.confusion_matrix.flatMap((row, t) => row.filter((_, p) => p !== t)));
  const rows = result.confusion_matrix.map((row, t) => {
    const tr = document.createElement("tr");
    tr.append(Object.assign(document.createElement("th"), { textContent: t }));
    row.forEach((count, p) => {
      const td = Object.assign(document.createElement("td"), { textContent: count, title: `true ${t}, predicted ${p}` });
      const strength = t === p ? 0.35 : Math.min(1, count / largestWrong);
      td.style.background = t === p ? `rgba(37, 99, 235, ${strength})` : `rgba(185, 28, 28, ${strength * 0.8})`;
      td.addEventListener("click", () => showCell(result.model, t, p, td));
      tr.append(td);
    });
    return tr;
  });
  table.replaceChildren(head, ...rows);
}

async function showCell(model, t, p, td) {
  document.querySelectorAll(".confusion td.selected").forEach((c) => c.classList.remove("selected"));
  td.classList.add("selected");
  try {
    const cell = await getJSON(`${modelURL(model)}/confusion/${t}/${p}`);
    const more = cell.count > cell.images.length ? ` (the first ${cell.images.length})` : "";
    gallery(`${cell.count} test images of ${t} predicted as ${p}${more}`, cell.images, (i) => `#${i.index}`);
  } catch (error) {
    say(error.message);
  }
}

export async function showModel(id) {
  wanted = id;
  if (!id || shownFor === id) return;
  document.getElementById("explore-note").textContent = "evaluating on the 10,000 test images...";
  try {
    const result = await getJSON(`${modelURL(id)}/evaluation`);
    if (wanted !== id) return;
    shownFor = id;
    document.getElementById("accuracy").textContent = `${(100 * result.accuracy).toFixed(2)}%`;
    document.getElementById("explore-note").textContent =
      `${result.correct} of ${result.total} right, ${result.errors} wrong; scores are ${result.score_meaning}`;
    matrix(result);
    const key = result.score;
    gallery("Most confident mistakes", result.most_confident_mistakes,
      (m) => `${m.true} → ${m.predicted} (${m[key].toFixed(2)})`);
    drawCurve(document.getElementById("explore-curve"), result.learning_curve.epochs);
  } catch (error) {
    document.getElementById("explore-note").textContent = "";
    say(error.message);
  }
}

export function forget(id) {
  if (shownFor === id) shownFor = null;
}
