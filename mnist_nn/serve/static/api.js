// The page talks to the server only through its JSON API; every error arrives as {"error": "..."}.

async function answer(response) {
  const body = await response.json().catch(() => ({ error: `${response.status} ${response.statusText}` }));
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

export async function getJSON(url) {
  return answer(await fetch(url, { headers: { Accept: "application/json" } }));
}

export async function postJSON(url, body) {
  return answer(await fetch(url, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  }));
}

export function say(text) {
  document.getElementById("message").textContent = text || "";
}

export const modelURL = (id) => `/api/models/${id.split("/").map(encodeURIComponent).join("/")}`;
