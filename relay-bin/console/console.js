// popline's moderation console: the live streams of this node with their latest snapshots, a player, Forbid
// (with confirmation) and the ban list. It talks to the node's admin API with the admin token, which it keeps
// in this tab's sessionStorage (from the sign-in form or a `#token=...` fragment, never sent in a URL).
"use strict";

const REFRESH_MS = 2000;
const SNAPSHOT_MS = 4000;
const SNAPSHOT_WIDTH = 480;

const state = {
  token: sessionStorage.getItem("popline-token") || "",
  node: null,
  streams: [],
  snapshots: new Map(), // stream -> {url, at, pending}
  player: null, // {stream, hls}
  forbidding: null,
  refreshing: null, // the refresh timer, once signed in
};

const $ = (id) => document.getElementById(id);

function setStatus(text, bad) {
  const status = $("status");
  status.textContent = text;
  status.className = bad ? "error" : "";
}

class Unauthorized extends Error {}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (state.token) headers.Authorization = "Bearer " + state.token;
  const response = await fetch(path, Object.assign({}, options, { headers, cache: "no-store" }));
  if (response.status === 401) throw new Unauthorized("the admin token was refused");
  return response;
}

async function apiJson(path, options) {
  const response = await api(path, options);
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = null; }
  if (!response.ok) throw new Error((body && body.error) || response.status + " " + text);
  return body;
}

function showLogin(message) {
  if (state.refreshing !== null) {
    clearInterval(state.refreshing);
    state.refreshing = null;
  }
  $("console").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  const error = $("login-error");
  error.hidden = !message;
  error.textContent = message || "";
  setStatus("signed out");
  $("token").focus();
}

async function start() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.get("token")) {
    state.token = fragment.get("token");
    sessionStorage.setItem("popline-token", state.token);
    history.replaceState(null, "", location.pathname + location.search);
  }
  try {
    state.node = await apiJson("/api/v1/console");
  } catch (e) {
    if (e instanceof Unauthorized) return showLogin(state.token ? "The token was refused." : "");
    setStatus("cannot reach the node: " + e.message, true);
    setTimeout(start, REFRESH_MS);
    return;
  }
  $("login").hidden = true;
  $("console").hidden = false;
  $("logout").hidden = !state.token;
  await refresh();
  if (state.refreshing === null) state.refreshing = setInterval(refresh, REFRESH_MS);
}

function egressUrl(path) {
  const node = state.node || {};
  if (!node.egress_port) return null;
  const host = node.egress_host || location.hostname;
  const bracketed = host.includes(":") ? "[" + host + "]" : host;
  return location.protocol + "//" + bracketed + ":" + node.egress_port + path;
}

// The renditions running transcodes publish (from GET /api/v1/transcodes): only those are shown as a
// source's renditions rather than streams of their own, so a stream named like one still gets its card.
function renditionsOf(transcodes) {
  const of = new Map();
  for (const t of transcodes) {
    const app = t.stream.split("/")[0];
    for (const name of t.renditions) of.set(app + "/" + name, t.stream);
  }
  return of;
}

function duration(ms) {
  const s = Math.floor(ms / 1000);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return (h ? h + ":" + String(m).padStart(2, "0") : m) + ":" + String(s % 60).padStart(2, "0");
}

async function refresh() {
  let streams, clients, bans, transcodes;
  try {
    [streams, clients, bans, transcodes] = await Promise.all([
      apiJson("/api/v1/streams"),
      apiJson("/api/v1/clients"),
      apiJson("/api/v1/bans"),
      apiJson("/api/v1/transcodes"),
    ]);
  } catch (e) {
    if (e instanceof Unauthorized) return showLogin("The token was refused.");
    setStatus("refresh failed: " + e.message, true);
    return;
  }
  const peers = new Map(clients.map((c) => [c.id, c.peer]));
  const live = streams.filter((s) => s.publisher !== null && s.publisher !== undefined || s.origin);
  const renditionOf = renditionsOf(transcodes || []);
  const sources = live.filter((s) => !renditionOf.has(s.stream));
  for (const s of sources) {
    s.renditions = live.filter((r) => renditionOf.get(r.stream) === s.stream)
      .map((r) => r.stream.slice(s.stream.length + 1));
    s.peer = s.publisher !== null && s.publisher !== undefined ? peers.get(s.publisher) : "mesh: " + s.origin;
  }
  state.streams = sources;
  renderWall(sources);
  renderBans(bans);
  setStatus(sources.length + " live · " + new Date().toLocaleTimeString());
}

function card(stream) {
  const el = document.createElement("article");
  el.className = "card";
  el.dataset.stream = stream;
  el.innerHTML =
    '<div class="shot"><span class="none">waiting for a keyframe...</span></div>' +
    '<div class="info"><div class="name"></div><div class="meta"></div><div class="renditions"></div></div>' +
    '<div class="actions"><button type="button" class="watch">Watch</button>' +
    '<button type="button" class="forbid danger">Forbid</button></div>';
  el.querySelector(".shot").addEventListener("click", () => openPlayer(stream));
  el.querySelector(".watch").addEventListener("click", () => openPlayer(stream));
  el.querySelector(".forbid").addEventListener("click", () => askForbid(stream));
  return el;
}

function renderWall(sources) {
  const wall = $("wall");
  const keep = new Set(sources.map((s) => s.stream));
  for (const el of [...wall.children]) {
    if (!keep.has(el.dataset.stream)) {
      el.remove();
      const snap = state.snapshots.get(el.dataset.stream);
      if (snap && snap.url) URL.revokeObjectURL(snap.url);
      state.snapshots.delete(el.dataset.stream);
    }
  }
  for (const s of sources) {
    let el = wall.querySelector('[data-stream="' + CSS.escape(s.stream) + '"]');
    if (!el) {
      el = card(s.stream);
      wall.appendChild(el);
    }
    el.querySelector(".name").textContent = s.stream;
    const meta = [
      s.peer || "",
      (s.viewers + s.hls_sessions) + " viewers",
      s.bitrate_kbps ? s.bitrate_kbps + " kbit/s" : "",
      s.width ? s.width + "x" + s.height : "",
      "up " + duration(s.publishing_ms),
    ].filter(Boolean);
    el.querySelector(".meta").innerHTML = meta.map((m) => "<span></span>").join("");
    [...el.querySelectorAll(".meta span")].forEach((span, i) => { span.textContent = meta[i]; });
    const renditions = el.querySelector(".renditions");
    renditions.innerHTML = s.renditions.map(() => "<span></span>").join("");
    [...renditions.children].forEach((span, i) => { span.textContent = s.renditions[i]; });
    refreshSnapshot(s.stream, el);
  }
  $("wall-empty").hidden = sources.length > 0;
  $("live-count").textContent = "(" + sources.length + ")";
  if (state.player && !keep.has(state.player.stream)) {
    $("player-error").hidden = false;
    $("player-error").textContent = "The stream ended.";
  }
}

async function refreshSnapshot(stream, el) {
  const snap = state.snapshots.get(stream) || { url: null, at: 0, pending: false };
  state.snapshots.set(stream, snap);
  if (snap.pending || Date.now() - snap.at < SNAPSHOT_MS) return;
  snap.pending = true;
  try {
    const response = await api("/api/v1/streams/" + stream + "/snapshot.jpg?width=" + SNAPSHOT_WIDTH);
    if (response.ok) {
      const blob = await response.blob();
      // The card may have left the wall meanwhile (stream ended or forbidden).
      if (!el.isConnected) return;
      const url = URL.createObjectURL(blob);
      const shot = el.querySelector(".shot");
      let img = shot.querySelector("img");
      if (!img) {
        shot.innerHTML = "";
        img = document.createElement("img");
        img.alt = "latest keyframe of " + stream;
        shot.appendChild(img);
      }
      img.src = url;
      img.dataset.keyframeMs = response.headers.get("x-popline-keyframe-dts-ms") || "";
      if (snap.url) URL.revokeObjectURL(snap.url);
      snap.url = url;
    } else {
      const body = await response.json().catch(() => ({}));
      const none = el.querySelector(".shot .none");
      if (none) none.textContent = body.error || "no picture (" + response.status + ")";
    }
  } catch (_) {
    // The next refresh tries again.
  } finally {
    snap.at = Date.now();
    snap.pending = false;
  }
}

function renderBans(bans) {
  const body = $("bans").querySelector("tbody");
  body.innerHTML = "";
  for (const ban of bans) {
    const row = document.createElement("tr");
    row.dataset.stream = ban.stream;
    for (const text of [ban.stream, ban.reason || "", ban.permanent ? "until lifted" : ban.until, "#" + ban.id]) {
      const cell = document.createElement("td");
      cell.textContent = text;
      row.appendChild(cell);
    }
    const cell = document.createElement("td");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "unforbid";
    button.textContent = "Unforbid";
    button.addEventListener("click", () => unforbid(ban.stream, button));
    cell.appendChild(button);
    row.appendChild(cell);
    body.appendChild(row);
  }
  $("bans-empty").hidden = bans.length > 0;
}

async function unforbid(stream, button) {
  button.disabled = true;
  try {
    await apiJson("/api/v1/streams/" + stream + "/forbid", { method: "DELETE" });
    setStatus("ban of " + stream + " lifted");
  } catch (e) {
    setStatus("unforbid failed: " + e.message, true);
  }
  refresh();
}

function askForbid(stream) {
  state.forbidding = stream;
  $("forbid-stream").textContent = stream;
  $("forbid-reason").value = "";
  $("forbid-error").hidden = true;
  $("forbid-dialog").showModal();
  $("forbid-reason").focus();
}

async function confirmForbid(event) {
  event.preventDefault();
  const stream = state.forbidding;
  if (!stream) return;
  const chosen = $("forbid-duration").value;
  const body = { reason: $("forbid-reason").value || "forbidden from the console" };
  if (chosen === "permanent") body.permanent = true; else body.duration_s = Number(chosen);
  $("forbid-confirm").disabled = true;
  try {
    const answer = await apiJson("/api/v1/streams/" + stream + "/forbid", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    $("forbid-dialog").close();
    setStatus(stream + " forbidden: " + answer.kicked + " clients disconnected" + (answer.saved ? "" : " (ban file not written yet!)"));
    if (state.player && state.player.stream === stream) closePlayer();
    state.forbidding = null;
    refresh();
  } catch (e) {
    $("forbid-error").hidden = false;
    $("forbid-error").textContent = e.message;
  } finally {
    $("forbid-confirm").disabled = false;
  }
}

function openPlayer(stream) {
  closePlayer();
  const url = egressUrl("/" + stream + "/index.m3u8");
  $("player").hidden = false;
  $("player-title").textContent = stream;
  $("player-error").hidden = true;
  const flv = egressUrl("/" + stream + ".flv");
  $("player-flv").hidden = !flv;
  if (flv) $("player-flv").href = flv;
  const select = $("rendition");
  select.innerHTML = '<option value="-1">Auto</option>';
  const video = $("player-video");
  state.player = { stream, hls: null };
  if (!url) {
    $("player-error").hidden = false;
    $("player-error").textContent = "HLS egress is off on this node (egress.enabled, egress.hls).";
    return;
  }
  if (window.Hls && Hls.isSupported()) {
    const hls = new Hls({ lowLatencyMode: true });
    state.player.hls = hls;
    hls.on(Hls.Events.MANIFEST_PARSED, (_, data) => {
      data.levels.forEach((level, i) => {
        const option = document.createElement("option");
        option.value = String(i);
        option.textContent = (level.height ? level.height + "p " : "") + Math.round(level.bitrate / 1000) + " kbit/s";
        select.appendChild(option);
      });
      video.play().catch(() => {});
    });
    hls.on(Hls.Events.ERROR, (_, data) => {
      if (data.fatal) {
        $("player-error").hidden = false;
        $("player-error").textContent = "playback failed: " + data.details;
      }
    });
    hls.loadSource(url);
    hls.attachMedia(video);
  } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
    video.src = url;
    video.play().catch(() => {});
  } else {
    $("player-error").hidden = false;
    $("player-error").textContent = "This browser plays neither HLS nor Media Source Extensions.";
  }
}

function closePlayer() {
  if (state.player && state.player.hls) state.player.hls.destroy();
  const video = $("player-video");
  video.removeAttribute("src");
  video.load();
  state.player = null;
  $("player").hidden = true;
}

$("rendition").addEventListener("change", (e) => {
  if (state.player && state.player.hls) state.player.hls.currentLevel = Number(e.target.value);
});
$("player-close").addEventListener("click", closePlayer);
$("player-forbid").addEventListener("click", () => state.player && askForbid(state.player.stream));
$("forbid-form").addEventListener("submit", confirmForbid);
$("forbid-cancel").addEventListener("click", () => { state.forbidding = null; $("forbid-dialog").close(); });
$("login-form").addEventListener("submit", (e) => {
  e.preventDefault();
  state.token = $("token").value.trim();
  sessionStorage.setItem("popline-token", state.token);
  start();
});
$("logout").addEventListener("click", () => {
  sessionStorage.removeItem("popline-token");
  state.token = "";
  location.reload();
});
start();
