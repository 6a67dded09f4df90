// Small pictures drawn on canvases: 28x28 images, weight maps, learning curves.

// values: 784 numbers in 0..1 (or a base64 string of 784 bytes), drawn white on black.
export function drawGray(canvas, values) {
  if (typeof values === "string") values = Array.from(atob(values), (c) => c.charCodeAt(0) / 255);
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(28, 28);
  values.forEach((v, i) => {
    const g = Math.round(255 * Math.min(1, Math.max(0, v)));
    image.data.set([g, g, g, 255], 4 * i);
  });
  ctx.putImageData(image, 0, 0);
}

// weights: 784 numbers; red for positive, blue for negative, scaled by the largest magnitude.
export function drawWeights(canvas, weights, largest) {
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(28, 28);
  weights.forEach((w, i) => {
    const t = Math.min(1, Math.abs(w) / (largest || 1));
    const rgb = w >= 0 ? [255, 255 * (1 - t), 255 * (1 - t)] : [255 * (1 - t), 255 * (1 - t), 255];
    image.data.set([...rgb, 255], 4 * i);
  });
  ctx.putImageData(image, 0, 0);
}

// A colour for an activation: sigmoid and relu outputs in 0..top, tanh in -1..1.
export function activationColour(a, activation, top) {
  const t = activation === "tanh" ? (a + 1) / 2 : Math.min(1, a / (top || 1));
  const g = Math.round(255 * (1 - t));
  return `rgb(${g}, ${g}, ${Math.round(255 - 155 * t)})`;
}

// records: history.json's epochs. Accuracy (test solid, validation dashed, train dotted) from
// min to 100%, per epoch; `total` epochs make the x axis (so a curve grows into it while training).
export function drawCurve(canvas, records, total) {
  const ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height, left = 44, bottom = 24, top = 10, right = 10;
  ctx.clearRect(0, 0, W, H);
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = "#6b7280";
  const epochs = Math.max(total || 0, records.length, 1);
  const series = [["test_accuracy", "#2563eb", []], ["validation_accuracy", "#16a34a", [5, 4]],
    ["train_accuracy", "#9ca3af", [2, 3]]];
  const values = records.flatMap((r) => series.map(([k]) => r[k]).filter((v) => v != null));
  const low = values.length ? Math.max(0, Math.floor(Math.min(...values) * 20) / 20) : 0.8;
  const x = (e) => left + (W - left - right) * (epochs === 1 ? 0.5 : (e - 1) / (epochs - 1));
  const y = (v) => top + (H - top - bottom) * (1 - (v - low) / (1 - low || 1));
  ctx.strokeStyle = "#d8dde5";
  ctx.strokeRect(left, top, W - left - right, H - top - bottom);
  for (const v of [low, (low + 1) / 2, 1]) ctx.fillText(`${(100 * v).toFixed(0)}%`, 4, y(v) + 4);
  ctx.fillText("epoch 1", left, H - 6);
  ctx.fillText(`${epochs}`, W - right - 14, H - 6);
  series.forEach(([key, colour, dash], i) => {
    const points = records.filter((r) => r[key] != null);
    if (!points.length) return;
    ctx.strokeStyle = colour; ctx.fillStyle = colour; ctx.setLineDash(dash); ctx.lineWidth = 2;
    ctx.beginPath();
    points.forEach((r, j) => (j ? ctx.lineTo : ctx.moveTo).call(ctx, x(r.epoch), y(r[key])));
    ctx.stroke();
    points.forEach((r) => ctx.fillRect(x(r.epoch) - 2, y(r[key]) - 2, 4, 4));
    ctx.setLineDash([]);
    ctx.fillText(key.replace("_accuracy", ""), left + 8 + 70 * i, top + 14);
  });
}
