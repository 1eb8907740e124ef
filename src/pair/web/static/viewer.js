// PAIR series viewer: WADO-RS /rendered images, window/level, zoom/pan, prefetch, header panel.
"use strict";
(function () {
  const root = document.getElementById("viewer");
  const img = document.getElementById("image");
  if (!root || !img) return;
  const uids = JSON.parse(document.getElementById("instances").textContent);
  const base = "/dicomweb/studies/" + root.dataset.study + "/series/" + root.dataset.series + "/instances/";
  const PRESETS = { lung: [-600, 1500], mediastinum: [40, 400], bone: [400, 1800] };
  const PREFETCH_AHEAD = 10, PREFETCH_BEHIND = 4;
  const viewport = document.getElementById("viewport");
  const slider = document.getElementById("slice");
  const counter = document.getElementById("counter");
  const loading = document.getElementById("loading");
  const readout = document.getElementById("wl-readout");
  const state = { i: 0, wc: null, ww: null, zoom: 1, x: 0, y: 0, tool: "wl", baseWL: null };
  const cache = new Map();
  let names = {};
  let metaTimer = null;

  function url(i) {
    let u = base + uids[i] + "/rendered";
    if (state.ww !== null) u += "?window=" + Math.round(state.wc) + "," + Math.round(state.ww) + ",linear";
    return u;
  }
  function prefetch(i) {
    const u = url(i);
    if (cache.has(u)) return;
    const pre = new Image();
    pre.decoding = "async";
    pre.src = u;
    cache.set(u, pre);
    if (cache.size > 600) cache.delete(cache.keys().next().value);
  }
  function transform() {
    img.style.transform = "translate(" + state.x + "px," + state.y + "px) scale(" + state.zoom + ")";
  }
  function showReadout() {
    readout.textContent = state.ww === null ? "W/L: default" : "W " + Math.round(state.ww) + " / L " + Math.round(state.wc);
  }
  function show(i) {
    state.i = Math.max(0, Math.min(uids.length - 1, i));
    const u = url(state.i);
    prefetch(state.i);
    loading.hidden = cache.get(u).complete;
    img.onload = function () { loading.hidden = true; img.style.filter = ""; };
    img.src = u;
    img.dataset.index = String(state.i + 1);
    slider.value = String(state.i + 1);
    counter.textContent = (state.i + 1) + " / " + uids.length;
    viewport.setAttribute("aria-label", "Image " + (state.i + 1) + " of " + uids.length);
    for (let k = 1; k <= PREFETCH_AHEAD; k++) if (state.i + k < uids.length) prefetch(state.i + k);
    for (let k = 1; k <= PREFETCH_BEHIND; k++) if (state.i - k >= 0) prefetch(state.i - k);
    clearTimeout(metaTimer);
    metaTimer = setTimeout(loadHeader, 150);
  }
  function setWindow(wc, ww) {
    state.wc = wc; state.ww = ww === null ? null : Math.max(1, ww);
    showReadout();
    show(state.i);
  }
  function pressed(selector, el) {
    document.querySelectorAll(selector).forEach(function (b) { b.setAttribute("aria-pressed", String(b === el)); });
  }

  // ---- header panel ----
  function valueText(el) {
    if (!el) return "";
    if (el.vr === "SQ") return "(" + (el.Value ? el.Value.length : 0) + " item sequence)";
    if (el.BulkDataURI || el.InlineBinary) return "(binary data)";
    if (!el.Value) return "";
    return el.Value.map(function (v) { return (v && typeof v === "object") ? (v.Alphabetic || JSON.stringify(v)) : String(v); }).join("\\");
  }
  function loadHeader() {
    const i = state.i;
    fetch(base + uids[i] + "/metadata", { headers: { Accept: "application/dicom+json" }, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
      .then(function (body) {
        if (i !== state.i) return;
        const ds = Array.isArray(body) ? body[0] : body;
        const tbody = document.querySelector("#header-table tbody");
        tbody.textContent = "";
        Object.keys(ds).sort().forEach(function (tag) {
          const tr = document.createElement("tr");
          const t = "(" + tag.slice(0, 4) + "," + tag.slice(4) + ")";
          [t, names[tag] || "", valueText(ds[tag])].forEach(function (text) {
            const td = document.createElement("td"); td.textContent = text; tr.appendChild(td);
          });
          tbody.appendChild(tr);
        });
        if (state.baseWL === null && ds["00281050"] && ds["00281051"]) {
          state.baseWL = [Number(ds["00281050"].Value[0]), Number(ds["00281051"].Value[0])];
        }
        filterHeader();
      })
      .catch(function (status) {
        const tbody = document.querySelector("#header-table tbody");
        tbody.innerHTML = "<tr><td colspan=3>Header not available (" + status + ")</td></tr>";
      });
  }
  function filterHeader() {
    const q = document.getElementById("hdr-filter").value.toLowerCase();
    document.querySelectorAll("#header-table tbody tr").forEach(function (tr) {
      tr.hidden = q !== "" && tr.textContent.toLowerCase().indexOf(q) < 0;
    });
  }
  document.getElementById("hdr-filter").addEventListener("input", filterHeader);

  // ---- input ----
  viewport.addEventListener("wheel", function (ev) {
    ev.preventDefault();
    if (ev.ctrlKey) { state.zoom = Math.min(8, Math.max(0.25, state.zoom * (ev.deltaY < 0 ? 1.15 : 1 / 1.15))); transform(); return; }
    show(state.i + (ev.deltaY > 0 ? 1 : -1));
  }, { passive: false });
  slider.addEventListener("input", function () { show(Number(slider.value) - 1); });
  viewport.addEventListener("keydown", function (ev) {
    const keys = { ArrowDown: 1, ArrowRight: 1, PageDown: 10, ArrowUp: -1, ArrowLeft: -1, PageUp: -10 };
    if (ev.key in keys) { show(state.i + keys[ev.key]); ev.preventDefault(); }
    else if (ev.key === "Home") { show(0); ev.preventDefault(); }
    else if (ev.key === "End") { show(uids.length - 1); ev.preventDefault(); }
    else if (ev.key === "+" || ev.key === "=") { state.zoom = Math.min(8, state.zoom * 1.2); transform(); }
    else if (ev.key === "-") { state.zoom = Math.max(0.25, state.zoom / 1.2); transform(); }
    else if (ev.key === "r" || ev.key === "R") reset();
    else if (ev.key === "w" || ev.key === "W") document.querySelector('[data-tool="wl"]').click();
    else if (ev.key === "p" || ev.key === "P") document.querySelector('[data-tool="pan"]').click();
  });
  let drag = null;
  viewport.addEventListener("mousedown", function (ev) {
    viewport.focus();
    const wl = state.ww !== null ? [state.wc, state.ww] : (state.baseWL || (root.dataset.modality === "CT" ? [40, 400] : [2048, 4096]));
    drag = { x: ev.clientX, y: ev.clientY, px: state.x, py: state.y, wc: wl[0], ww: wl[1], pan: state.tool === "pan" || ev.shiftKey || ev.button === 1 };
    ev.preventDefault();
  });
  window.addEventListener("mousemove", function (ev) {
    if (!drag) return;
    const dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
    if (drag.pan) { state.x = drag.px + dx; state.y = drag.py + dy; transform(); return; }
    const scale = Math.max(1, drag.ww / 250);
    drag.nw = Math.max(1, drag.ww + dx * scale);
    drag.nc = drag.wc + dy * scale;
    // live preview with CSS filters; the exact rendering is fetched when the mouse is released
    img.style.filter = "contrast(" + (drag.ww / drag.nw).toFixed(3) + ") brightness(" + (1 - (drag.nc - drag.wc) / drag.ww).toFixed(3) + ")";
    readout.textContent = "W " + Math.round(drag.nw) + " / L " + Math.round(drag.nc);
  });
  window.addEventListener("mouseup", function () {
    if (drag && !drag.pan && drag.nw !== undefined) { pressed("[data-preset]", null); setWindow(drag.nc, drag.nw); }
    drag = null;
  });
  document.querySelectorAll("[data-preset]").forEach(function (b) {
    b.addEventListener("click", function () {
      pressed("[data-preset]", b);
      const p = PRESETS[b.dataset.preset];
      if (p) setWindow(p[0], p[1]); else setWindow(null, null);
    });
  });
  document.querySelectorAll("[data-tool]").forEach(function (b) {
    b.addEventListener("click", function () { state.tool = b.dataset.tool; pressed("[data-tool]", b); viewport.style.cursor = state.tool === "pan" ? "move" : "crosshair"; });
  });
  function reset() { state.zoom = 1; state.x = 0; state.y = 0; transform(); }
  document.getElementById("zoom-in").addEventListener("click", function () { state.zoom = Math.min(8, state.zoom * 1.2); transform(); });
  document.getElementById("zoom-out").addEventListener("click", function () { state.zoom = Math.max(0.25, state.zoom / 1.2); transform(); });
  document.getElementById("reset").addEventListener("click", reset);

  fetch("/viewer/dictionary.json", { credentials: "same-origin" })
    .then(function (r) { return r.ok ? r.json() : {}; })
    .then(function (d) { names = d; filterHeader(); loadHeader(); });
  transform();
  showReadout();
  show(0);
  viewport.focus();
})();
