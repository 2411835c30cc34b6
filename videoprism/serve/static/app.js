// The search page of `videoprism serve`: plain JavaScript over the JSON API (no build step, no CDN).
"use strict";

const $ = (id) => document.getElementById(id);
let chosenFile = null;
let stopAt = null;

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

function fileName(path) {
  return path.split(/[\\/]/).pop();
}

function windowText(hit) {
  if (hit.start === null || hit.end === null) return "whole video";
  return `${hit.start.toFixed(1)}–${hit.end.toFixed(1)} s`;
}

async function fetchJSON(url, options) {
  const response = await fetch(url, options);
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    let detail = body && body.detail ? body.detail : response.statusText;
    if (Array.isArray(detail)) detail = detail.map((d) => d.msg).join("; ");
    throw new Error(`${response.status}: ${detail}`);
  }
  return body;
}

function searchOptions() {
  return { k: $("k").value || "24", kind: $("kind").value };
}

async function loadStats() {
  try {
    const s = await fetchJSON("/api/stats");
    const failed = s.failures ? `, ${s.failures} failed` : "";
    $("stats").textContent = `${s.rows} rows from ${s.videos} videos${failed} · model ${s.model} · ${s.dimensions}-d`;
  } catch (err) {
    $("stats").textContent = `Cannot read the store (${err.message})`;
  }
}

function play(hit, card) {
  const video = $("video");
  document.querySelectorAll(".card.playing").forEach((c) => c.classList.remove("playing"));
  card.classList.add("playing");
  const start = hit.start ?? 0;
  stopAt = hit.end;
  const fragment = hit.start === null ? "" : `#t=${hit.start},${hit.end}`;
  video.src = `/api/items/${hit.id}/media${fragment}`;
  video.dataset.id = String(hit.id);
  video.dataset.start = String(start);
  $("now-playing").textContent = `${fileName(hit.path)} · ${windowText(hit)} · score ${hit.score.toFixed(3)}`;
  $("player").hidden = false;
  video.load();
  $("player").scrollIntoView({ block: "nearest" });
}

function card(hit) {
  const el = document.createElement("article");
  el.className = "card";
  el.tabIndex = 0;
  el.dataset.id = String(hit.id);
  el.setAttribute("role", "button");
  el.setAttribute("aria-label", `Play ${fileName(hit.path)}, ${windowText(hit)}, score ${hit.score.toFixed(3)}`);

  const thumb = document.createElement("div");
  thumb.className = "thumb";
  if (hit.thumbnail) {
    const img = document.createElement("img");
    img.src = hit.thumbnail;
    img.alt = "";
    img.loading = "lazy";
    thumb.append(img);
  } else {
    thumb.textContent = "no thumbnail";
  }
  const meta = document.createElement("div");
  meta.className = "meta";
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = fileName(hit.path);
  name.title = hit.path;
  const info = document.createElement("span");
  info.className = "score";
  info.textContent = `#${hit.rank} · ${hit.score.toFixed(3)} · ${windowText(hit)}`;
  const like = document.createElement("button");
  like.type = "button";
  like.className = "like";
  like.textContent = "More like this";
  like.setAttribute("aria-label", `More like ${fileName(hit.path)}, ${windowText(hit)}`);
  like.addEventListener("click", (event) => {
    event.stopPropagation();
    moreLike(hit);
  });
  like.addEventListener("keydown", (event) => event.stopPropagation());
  meta.append(name, info, like);
  el.append(thumb, meta);
  el.addEventListener("click", () => play(hit, el));
  el.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      play(hit, el);
    }
  });
  return el;
}

function show(hits, what) {
  const grid = $("results");
  grid.replaceChildren(...hits.map(card));
  setStatus(hits.length ? `${hits.length} results for ${what}` : `No results for ${what}`);
}

async function run(what, request) {
  setStatus(`Searching ${what}…`);
  try {
    show(await request(), what);
  } catch (err) {
    setStatus(err.message, true);
  }
}

function searchText(text) {
  const params = new URLSearchParams({ q: text, ...searchOptions() });
  return run(`“${text}”`, () => fetchJSON(`/api/search?${params}`));
}

function moreLike(hit) {
  const params = new URLSearchParams({ like: String(hit.id), ...searchOptions() });
  return run(`items like ${fileName(hit.path)} (${windowText(hit)})`, () => fetchJSON(`/api/search?${params}`));
}

function uploadForm(fields) {
  const form = new FormData();
  form.append("file", chosenFile, chosenFile.name);
  for (const [key, value] of Object.entries(fields)) form.append(key, value);
  return form;
}

function searchVideo() {
  if (!chosenFile) return;
  const form = uploadForm(searchOptions());
  return run(`the video ${chosenFile.name}`, () => fetchJSON("/api/search", { method: "POST", body: form }));
}

async function classifyVideo() {
  if (!chosenFile) return;
  const labels = $("labels").value;
  if (labels.split(",").filter((l) => l.trim()).length < 2) {
    setStatus("Type at least two comma-separated labels to classify.", true);
    $("labels").focus();
    return;
  }
  setStatus(`Classifying ${chosenFile.name}…`);
  try {
    const [result] = await fetchJSON("/api/classify", { method: "POST", body: uploadForm({ labels }) });
    const list = $("classes");
    list.replaceChildren(
      ...result.labels.map(({ label, probability }) => {
        const li = document.createElement("li");
        const bar = document.createElement("span");
        bar.className = "bar";
        bar.style.width = `${Math.max(2, Math.round(probability * 160))}px`;
        li.append(bar, `${label}: ${(probability * 100).toFixed(1)}%`);
        return li;
      }),
    );
    list.hidden = false;
    setStatus(`${result.video}: most likely “${result.labels[0].label}”`);
  } catch (err) {
    setStatus(err.message, true);
  }
}

function choose(file) {
  chosenFile = file || null;
  $("video-search").disabled = $("video-classify").disabled = !chosenFile;
  $("classes").hidden = true;
  if (chosenFile) setStatus(`Chosen: ${chosenFile.name}. Search by it, or type labels and classify it.`);
}

function setUp() {
  loadStats();
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("query").value.trim();
    if (text) searchText(text);
  });
  $("video-file").addEventListener("change", (event) => choose(event.target.files[0]));
  $("video-search").addEventListener("click", searchVideo);
  $("video-classify").addEventListener("click", classifyVideo);

  const video = $("video");
  video.addEventListener("loadedmetadata", () => {
    // Seek to the window's start (for browsers that ignore the #t= fragment), then play.
    const start = Number(video.dataset.start || 0);
    if (video.currentTime < start) video.currentTime = start;
    video.play().catch(() => {});
  });
  video.addEventListener("timeupdate", () => {
    if (stopAt !== null && video.currentTime >= stopAt) {
      video.pause();
      stopAt = null;
    }
  });

  const overlay = $("drop-overlay");
  let depth = 0;
  document.addEventListener("dragenter", (event) => {
    event.preventDefault();
    depth += 1;
    overlay.hidden = false;
  });
  document.addEventListener("dragleave", () => {
    depth = Math.max(0, depth - 1);
    if (!depth) overlay.hidden = true;
  });
  document.addEventListener("dragover", (event) => event.preventDefault());
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    depth = 0;
    overlay.hidden = true;
    const file = event.dataTransfer.files[0];
    if (file) {
      choose(file);
      if ($("labels").value.trim()) classifyVideo();
      else searchVideo();
    }
  });
}

document.addEventListener("DOMContentLoaded", setUp);
