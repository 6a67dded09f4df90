// The Train tab: a form made from GET /api/settings (every setting of `python -m mnist_nn.train`, with
// its default), start and stop, and the run's events followed live (server-sent events): the epoch
// lines, a progress bar and the learning curve as it grows.
import { getJSON, postJSON, say } from "./api.js";
import { drawCurve } from "./pictures.js";

const form = document.getElementById("train-form");
const status = document.getElementById("train-status");
const startButton = document.getElementById("train-start");
const stopButton = document.getElementById("train-stop");
let fields = [], job = null, onFinished = () => {};

function input(field) {
  let element;
  if (field.kind === "choice") {
    element = document.createElement("select");
    for (const choice of field.choices) element.append(new Option(choice, choice, false, choice === field.default));
  } else if (field.kind === "bool") {
    element = Object.assign(document.createElement("input"), { type: "checkbox", checked: !!field.default });
  } else {
    element = document.createElement("input");
    element.type = field.kind === "int" || field.kind === "float" ? "number" : "text";
    if (field.kind === "float") element.step = "any";
    element.value = field.default == null ? "" : Array.isArray(field.default) ? field.default.join(" ") : field.default;
    if (field.kind === "ints") element.placeholder = "e.g. 100 30";
  }
  element.name = field.name;
  element.id = `setting-${field.name}`;
  element.dataset.testid = `setting-${field.name}`;
  return element;
}

export async function buildForm() {
  fields = (await getJSON("/api/settings")).fields;
  form.replaceChildren(...fields.flatMap((field) => {
    const label = Object.assign(document.createElement("label"), { textContent: field.flag || field.name, title: field.help });
    label.htmlFor = `setting-${field.name}`;
    const element = input(field);
    element.title = field.help;
    return [label, element];
  }));
}

// The form's values, typed as the API takes them; an empty box means the default.
function values() {
  const settings = {};
  for (const field of fields) {
    const element = form.elements[field.name];
    if (field.kind === "bool") { settings[field.name] = element.checked; continue; }
    const text = element.value.trim();
    if (text === "") continue;
    if (field.kind === "int" || field.kind === "float") settings[field.name] = Number(text);
    else if (field.kind === "ints") settings[field.name] = text.split(/[\s,]+/).map(Number);
    else settings[field.name] = text;
  }
  return settings;
}

function follow(started) {
  const lines = document.getElementById("train-lines");
  const progress = document.getElementById("train-progress");
  const records = [];
  const total = started.settings.epochs;
  lines.textContent = "";
  drawCurve(document.getElementById("train-curve"), records, total);
  const source = new EventSource(`/api/train/${started.job}/events`);
  source.addEventListener("line", (e) => { lines.textContent += JSON.parse(e.data).text + "\n"; lines.scrollTop = 1e9; });
  source.addEventListener("epoch_start", (e) => {
    const event = JSON.parse(e.data);
    status.textContent = `training epoch ${event.epoch}/${event.total}`;
    progress.value = 0;
  });
  source.addEventListener("progress", (e) => { progress.value = JSON.parse(e.data).fraction; });
  source.addEventListener("epoch", (e) => {
    records.push(JSON.parse(e.data).record);
    drawCurve(document.getElementById("train-curve"), records, total);
  });
  source.addEventListener("end", (e) => {
    const event = JSON.parse(e.data);
    source.close();
    for (const line of event.lines) lines.textContent += line + "\n";
    lines.scrollTop = 1e9;
    status.textContent = event.state;
    if (event.state === "done") progress.value = 1;
    job = null;
    startButton.disabled = false; stopButton.disabled = true;
    onFinished(event.run);
  });
}

startButton.addEventListener("click", async (event) => {
  event.preventDefault();
  say("");
  startButton.disabled = true;
  try {
    job = await postJSON("/api/train", values());
    status.textContent = "starting";
    stopButton.disabled = false;
    follow(job);
  } catch (error) {
    say(error.message);
    startButton.disabled = false;
  }
});

stopButton.addEventListener("click", async (event) => {
  event.preventDefault();
  if (!job) return;
  stopButton.disabled = true;
  status.textContent = "stopping";
  try { await postJSON(`/api/train/${job.job}/stop`, {}); } catch (error) { say(error.message); }
});

form.addEventListener("submit", (event) => event.preventDefault());

export function whenFinished(callback) { onFinished = callback; }
