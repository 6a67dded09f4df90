// The page: three tabs and the model picker they share.
import { getJSON, say } from "./api.js";
import { useModel } from "./draw.js";
import { forget, showModel } from "./explore.js";
import { buildForm, whenFinished } from "./train.js";

const picker = document.getElementById("model");
let tab = "draw";

async function loadModels(select) {
  try {
    const listing = await getJSON("/api/models");
    const keep = select || picker.value;
    picker.replaceChildren(...listing.models.map((m) => {
      const accuracy = m.test_accuracy == null ? "" : ` (test ${(100 * m.test_accuracy).toFixed(2)}%)`;
      return new Option(`${m.id}  ${m.sizes.join("-")}${accuracy}`, m.id);
    }));
    if (listing.models.some((m) => m.id === keep)) picker.value = keep;
    else if (listing.models.length) picker.value = listing.models[listing.models.length - 1].id;
    if (!listing.models.length) say(`no models under ${listing.runs} yet: train one in the Train tab`);
    picker.dataset.count = String(listing.models.length);
    changed();
  } catch (error) {
    say(error.message);
  }
}

function changed() {
  if (!picker.value) return;
  useModel(picker.value);
  if (tab === "explore") showModel(picker.value);
}

for (const button of document.querySelectorAll(".tab")) {
  button.addEventListener("click", () => {
    tab = button.dataset.tab;
    for (const b of document.querySelectorAll(".tab")) b.setAttribute("aria-selected", String(b === button));
    for (const panel of document.querySelectorAll(".panel")) panel.hidden = panel.id !== tab;
    if (tab === "explore") showModel(picker.value);
  });
}

picker.addEventListener("change", changed);
whenFinished((run) => { forget(run); loadModels(run); });
buildForm().catch((error) => say(error.message));
loadModels();
