// Shared by every dashboard page: the API key, fetch with X-API-Key, the connection
// banner, DOM helpers and formatters. Nothing is parsed as HTML: text from jobs and
// workers is untrusted and only ever becomes text nodes.
"use strict";

const Dash = (() => {
  const KEY_NAME = "orchestrator.apiKey";
  const HEARTBEAT_MS = 4000;
  const BACKOFF_MS = [1000, 2000, 4000, 8000, 15000];
  const TERMINAL = new Set(["completed", "partial", "failed", "cancelled",
    "success", "recursive_success", "child_incomplete", "timeout", "skipped"]);

  let online = true;
  let lostAt = 0;
  let failures = 0;
  let heartbeatTimer = null;
  let bannerTimer = null;
  const reconnectListeners = [];

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  // -- the key -------------------------------------------------------------------
  function key() {
    return sessionStorage.getItem(KEY_NAME) || "";
  }

  // A key may arrive in the URL fragment (#key=...): fragments never reach the
  // server. Move it to session storage and scrub it from the address bar.
  function keyFromFragment() {
    const match = /(?:^#|&)key=([^&]+)/.exec(location.hash);
    if (!match) return;
    sessionStorage.setItem(KEY_NAME, decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }

  function signOut() {
    sessionStorage.removeItem(KEY_NAME);
    showLogin("");
  }

  // -- fetch ---------------------------------------------------------------------
  async function api(path, options = {}, withKey = key()) {
    if (!withKey) throw new ApiError(401, "no_key", "no API key: sign in");  // the form is showing
    const headers = new Headers(options.headers || {});
    headers.set("X-API-Key", withKey);
    let response;
    try {
      response = await fetch(path, { ...options, headers, cache: "no-store", credentials: "omit" });
    } catch (error) {
      if (error.name !== "AbortError") connectionLost();
      throw error;
    }
    connectionOk();
    if (response.ok) return response;
    let body = {};
    try {
      body = await response.json();
    } catch (_) { /* not JSON: keep the status line */ }
    const error = new ApiError(response.status, body.error || "http_" + response.status,
      body.message || response.statusText || "HTTP " + response.status);
    if (response.status === 401 && withKey === key()) {
      sessionStorage.removeItem(KEY_NAME);
      showLogin("The server no longer accepts this key: " + error.message);
    }
    throw error;
  }

  async function json(path, options) {
    return (await api(path, options)).json();
  }

  // -- connection state and banner -------------------------------------------------
  function banner(kind, text) {
    const el = document.getElementById("banner");
    clearTimeout(bannerTimer);
    el.className = "banner " + kind;
    el.textContent = text;
    el.hidden = false;
  }

  function hideBanner() {
    document.getElementById("banner").hidden = true;
  }

  function setConn(state, text) {
    const el = document.getElementById("conn");
    el.className = "conn " + state;
    el.textContent = text;
  }

  function connectionLost() {
    failures += 1;
    if (online) {
      online = false;
      lostAt = Date.now();
    }
    const wait = BACKOFF_MS[Math.min(failures - 1, BACKOFF_MS.length - 1)];
    const since = Math.round((Date.now() - lostAt) / 1000);
    banner("error", "Connection to the server lost" + (since ? " " + since + "s ago" : "") +
      ". Retrying in " + wait / 1000 + "s…");
    setConn("down", "offline");
    scheduleHeartbeat(wait);
  }

  function connectionOk() {
    failures = 0;
    if (online) return;
    online = true;
    banner("ok", "Connection restored. Resynchronising…");
    setConn("up", "online");
    bannerTimer = setTimeout(hideBanner, 4000);
    scheduleHeartbeat(HEARTBEAT_MS);
    for (const listener of reconnectListeners) listener();
  }

  // /health is public and cheap: it tells a quiet page (nothing streaming) that the
  // server went away, and it is what retries with backoff until it comes back.
  function scheduleHeartbeat(ms) {
    clearTimeout(heartbeatTimer);
    heartbeatTimer = setTimeout(heartbeat, ms);
  }

  async function heartbeat() {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), 3000);
    try {
      const response = await fetch("/health", { cache: "no-store", signal: controller.signal });
      if (!response.ok) throw new Error("health " + response.status);
      connectionOk();
      scheduleHeartbeat(HEARTBEAT_MS);
    } catch (_) {
      connectionLost();
    } finally {
      clearTimeout(timer);
    }
  }

  function onReconnect(listener) {
    reconnectListeners.push(listener);
  }

  function isOnline() {
    return online;
  }

  // -- login -----------------------------------------------------------------------
  let startPage = null;

  function showLogin(message) {
    const overlay = document.getElementById("login");
    const error = document.getElementById("login-error");
    error.textContent = message || "";
    error.hidden = !message;
    overlay.hidden = false;
    document.getElementById("signout").hidden = true;
    document.getElementById("login-key").focus();
  }

  async function submitLogin(event) {
    event.preventDefault();
    const input = document.getElementById("login-key");
    const candidate = input.value.trim();
    const error = document.getElementById("login-error");
    if (!candidate) {
      error.textContent = "Enter the API key (api.api_key in config.yaml).";
      error.hidden = false;
      return;
    }
    try {
      await api("/api/v1/jobs?limit=1", {}, candidate);
    } catch (problem) {
      error.textContent = problem instanceof ApiError
        ? "Key refused (" + problem.status + "): " + problem.message
        : "Cannot reach the server: " + problem.message;
      error.hidden = false;
      input.select();
      return;
    }
    sessionStorage.setItem(KEY_NAME, candidate);
    input.value = "";
    document.getElementById("login").hidden = true;
    ready();
  }

  let started = false;

  function ready() {
    document.getElementById("signout").hidden = false;
    if (started) {
      location.reload();  // signed in again after a refusal: start the page's streams afresh
      return;
    }
    if (startPage) {
      started = true;
      startPage();
    }
  }

  // Pages call start(init): init runs once a key is known (asked for if needed).
  function start(init) {
    startPage = init;
    keyFromFragment();
    document.getElementById("login-form").addEventListener("submit", submitLogin);
    document.getElementById("signout").addEventListener("click", signOut);
    setConn("up", "online");
    scheduleHeartbeat(HEARTBEAT_MS);
    if (key()) ready();
    else showLogin("");
  }

  // -- DOM helpers -----------------------------------------------------------------
  // el("span", {className: "x", text: "y", title: "z"}, child...): strings become text nodes.
  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props)) {
      if (value === undefined || value === null) continue;
      if (name === "text") node.textContent = value;
      else if (name === "className") node.className = value;
      else if (name === "dataset") Object.assign(node.dataset, value);
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value);
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }

  function badge(status) {
    return el("span", { className: "badge s-" + status, text: String(status).replace("_", " ") });
  }

  function setBadge(node, status) {
    const cls = "badge s-" + status;
    if (node.className !== cls) node.className = cls;
    setText(node, String(status).replace("_", " "));
  }

  // -- formatting ------------------------------------------------------------------
  function duration(seconds) {
    if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "—";
    seconds = Math.max(0, seconds);
    if (seconds < 60) return seconds.toFixed(1) + "s";
    const total = Math.round(seconds);
    if (total < 3600) return Math.floor(total / 60) + "m " + String(total % 60).padStart(2, "0") + "s";
    return Math.floor(total / 3600) + "h " + String(Math.floor(total % 3600 / 60)).padStart(2, "0") + "m";
  }

  // A cost as reported; "est." when it came from a price table; a worker's "cost unknown (model X)" when
  // it reported tokens and no price is known (its status document's cost_basis and cost_note).
  function cost(usd, entry) {
    if (usd === null || usd === undefined) return entry && entry.cost_note ? String(entry.cost_note) : "—";
    return "$" + usd.toFixed(4) + (entry && entry.cost_basis === "estimated" ? " est." : "");
  }

  function when(epoch) {
    if (!epoch) return "—";
    const date = new Date(epoch * 1000);
    const today = new Date().toDateString() === date.toDateString();
    const time = date.toLocaleTimeString([], { hour12: false });
    return today ? time : date.toISOString().slice(0, 10) + " " + time;
  }

  function elapsed(doc) {
    if (doc.duration !== null && doc.duration !== undefined) return doc.duration;
    if (doc.started_at && !TERMINAL.has(doc.status)) return Date.now() / 1000 - doc.started_at;
    return null;
  }

  function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }

  return {
    ApiError, api, json, start, onReconnect, isOnline, connectionLost, banner,
    el, setText, badge, setBadge, duration, cost, when, elapsed, sleep, TERMINAL,
  };
})();
