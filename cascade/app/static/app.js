// The search page of `cascade serve`: asks /health for the pipelines, sends the form to /search.
"use strict";

const $ = (id) => document.getElementById(id);

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text;  // never innerHTML: document texts are data
  if (cls) td.className = cls;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function errorText(status, body) {
  if (body && body.message) return `${status}: ${body.message}`;
  if (body && typeof body.detail === "string") return `${status}: ${body.detail}`;
  return `${status}: ${JSON.stringify(body)}`;
}

async function loadHealth() {
  try {
    const health = await (await fetch("/health")).json();
    const select = $("pipeline");
    for (const p of health.pipelines) {
      const option = document.createElement("option");
      option.value = p.name;
      option.textContent = `${p.name} (${p.stages.map((s) => `${s.name}@${s.k ?? "all"}`).join(" >> ")})`;
      select.appendChild(option);
    }
    $("pipeline-label").hidden = health.pipelines.length < 2;
    $("token-label").hidden = !health.auth;
    $("token").value = localStorage.getItem("cascade-token") || "";
    $("k").max = health.limits.max_k;
    const docs = health.pipelines[0].documents;
    $("status").textContent = `ready: ${health.pipelines.length} pipeline(s)` + (docs != null ? `, ${docs} documents` : "");
    document.body.dataset.ready = "1";
  } catch (err) {
    $("status").textContent = `server not reachable: ${err}`;
  }
}

function render(data) {
  const result = data.results[0];
  const stages = $("stages").tBodies[0];
  stages.replaceChildren();
  for (const s of result.stages) {
    const row = stages.insertRow();
    cell(row, s.stage);
    cell(row, s.k ?? "all", "num");
    cell(row, s.kept ?? "", "num");
    cell(row, s.ms.toFixed(1), "num");
  }
  const hits = $("results").tBodies[0];
  hits.replaceChildren();
  for (const h of result.hits) {
    const row = hits.insertRow();
    row.dataset.docId = h.id;
    cell(row, h.rank, "num");
    cell(row, h.id);
    cell(row, h.score.toFixed(4), "num");
    cell(row, h.text, "text");
  }
  $("summary").textContent = `${result.hits.length} hits from ${data.pipeline} in ${data.ms.toFixed(1)} ms ` +
    `(batch of ${data.batch.queries} queries from ${data.batch.requests} requests)`;
  for (const id of ["summary", "stages", "results"]) $(id).hidden = false;
}

async function search(event) {
  event.preventDefault();
  showError("");
  const body = { query: $("query").value, k: Number($("k").value) };
  if ($("pipeline").value) body.pipeline = $("pipeline").value;
  const headers = { "Content-Type": "application/json" };
  const token = $("token").value;
  if (token) {
    headers.Authorization = `Bearer ${token}`;
    localStorage.setItem("cascade-token", token);
  }
  $("search").disabled = true;
  try {
    const response = await fetch("/search", { method: "POST", headers, body: JSON.stringify(body) });
    const data = await response.json();
    if (!response.ok) showError(errorText(response.status, data));
    else render(data);
  } catch (err) {
    showError(`request failed: ${err}`);
  } finally {
    $("search").disabled = false;
  }
}

$("search-form").addEventListener("submit", search);
loadHealth();
