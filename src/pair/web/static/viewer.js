// PAIR series viewer: WADO-RS /rendered images, window/level presets per modality, zoom/pan,
// prefetch, overlays (W/L, slice position and thickness, zoom), cine, length and ROI
// measurements (ROI statistics from the decoded frame, in HU for CT), header panel.
"use strict";
(function () {
  const root = document.getElementById("viewer");
  const img = document.getElementById("image");
  if (!root || !img) return;
  const uids = JSON.parse(document.getElementById("instances").textContent);
  const base = "/dicomweb/studies/" + root.dataset.study + "/series/" + root.dataset.series + "/instances/";
  const PRESETS = {};  // from the page: the modality's presets (none for radiographs)
  document.querySelectorAll("[data-preset][data-center]").forEach(function (b) {
    PRESETS[b.dataset.preset] = [Number(b.dataset.center), Number(b.dataset.width)];
  });
  const svg = document.getElementById("measures");
  const list = document.getElementById("measure-list");
  const measures = [];  // {i, kind, a: [x, y], b: [x, y], text} in image pixel coordinates
  let meta = null;  // DICOM JSON of the image shown
  let cineTimer = null;
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
    document.getElementById("ov-zoom").textContent = "Zoom " + Math.round(state.zoom * 100) + "%";
    draw();
  }
  function showReadout() {
    const text = state.ww === null ? "W/L: " + (state.baseWL ? "header" : "default") : "W " + Math.round(state.ww) + " / L " + Math.round(state.wc);
    readout.textContent = text;
    const header = state.baseWL ? "W " + Math.round(state.baseWL[1]) + " / L " + Math.round(state.baseWL[0]) : "full range";
    document.getElementById("ov-wl").textContent = state.ww === null ? header : text;
  }
  function num(tag, k) {
    const el = meta && meta[tag];
    return el && el.Value && el.Value.length > (k || 0) ? Number(el.Value[k || 0]) : null;
  }
  function showPosition() {
    const loc = num("00201041") !== null ? num("00201041") : num("00200032", 2);
    const thk = num("00180050");
    const parts = [];
    if (loc !== null) parts.push("Pos " + loc.toFixed(1) + " mm");
    if (thk !== null) parts.push("Thk " + thk.toFixed(2) + " mm");
    document.getElementById("ov-pos").textContent = parts.join(" · ");
  }
  function show(i) {
    state.i = Math.max(0, Math.min(uids.length - 1, i));
    const u = url(state.i);
    prefetch(state.i);
    loading.hidden = cache.get(u).complete;
    img.onload = function () { loading.hidden = true; img.style.filter = ""; draw(); };
    img.src = u;
    img.dataset.index = String(state.i + 1);
    slider.value = String(state.i + 1);
    counter.textContent = (state.i + 1) + " / " + uids.length;
    viewport.setAttribute("aria-label", "Image " + (state.i + 1) + " of " + uids.length);
    for (let k = 1; k <= PREFETCH_AHEAD; k++) if (state.i + k < uids.length) prefetch(state.i + k);
    for (let k = 1; k <= PREFETCH_BEHIND; k++) if (state.i - k >= 0) prefetch(state.i - k);
    clearTimeout(metaTimer);
    metaTimer = setTimeout(loadHeader, cineTimer ? 0 : 150);
    draw();
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
        meta = ds;
        showPosition();
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
          showReadout();
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
    else if (ev.key === "l" || ev.key === "L") document.querySelector('[data-tool="length"]').click();
    else if (ev.key === "o" || ev.key === "O") document.querySelector('[data-tool="roi"]').click();
    else if ((ev.key === "c" || ev.key === "C") && !cineButton.disabled) cineButton.click();
  });
  let drag = null;
  viewport.addEventListener("mousedown", function (ev) {
    viewport.focus();
    if ((state.tool === "length" || state.tool === "roi") && !ev.shiftKey && ev.button === 0) {
      const p = toImage(ev);
      drag = { measure: { i: state.i, kind: state.tool, a: p, b: p, text: "" } };
      ev.preventDefault();
      return;
    }
    const wl = state.ww !== null ? [state.wc, state.ww] : (state.baseWL || (root.dataset.modality === "CT" ? [40, 400] : [2048, 4096]));
    drag = { x: ev.clientX, y: ev.clientY, px: state.x, py: state.y, wc: wl[0], ww: wl[1], pan: state.tool === "pan" || ev.shiftKey || ev.button === 1 };
    ev.preventDefault();
  });
  window.addEventListener("mousemove", function (ev) {
    if (!drag) return;
    if (drag.measure) { drag.measure.b = toImage(ev); draw(drag.measure); return; }
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
    if (drag && drag.measure) { finish(drag.measure); drag = null; return; }
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

  // ---- measurements ----
  function geometry() {
    // the image box (with the CSS transform) and the letterboxed content inside it
    const r = img.getBoundingClientRect(), v = viewport.getBoundingClientRect();
    const nw = img.naturalWidth || 1, nh = img.naturalHeight || 1;
    const s = Math.min(r.width / nw, r.height / nh);
    return { left: r.left - v.left + (r.width - nw * s) / 2, top: r.top - v.top + (r.height - nh * s) / 2, s: s, vx: v.left, vy: v.top };
  }
  function toImage(ev) {
    const g = geometry();
    return [(ev.clientX - g.vx - g.left) / g.s, (ev.clientY - g.vy - g.top) / g.s];
  }
  function spacing() {
    // PixelSpacing, else ImagerPixelSpacing (radiographs): [row spacing, column spacing] in mm
    let row = num("00280030", 0), col = num("00280030", 1);
    if (row === null) { row = num("00181164", 0); col = num("00181164", 1); }
    return row === null || col === null ? null : [row, col];
  }
  function node(tag, attrs, text) {
    const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
    Object.keys(attrs).forEach(function (k) { el.setAttribute(k, attrs[k]); });
    if (text) el.textContent = text;
    svg.appendChild(el);
  }
  function draw(pending) {
    if (!svg) return;
    svg.textContent = "";
    const g = geometry();
    const X = function (x) { return g.left + x * g.s; }, Y = function (y) { return g.top + y * g.s; };
    measures.concat(pending ? [pending] : []).forEach(function (m) {
      if (m.i !== state.i) return;
      if (m.kind === "length") node("line", { x1: X(m.a[0]), y1: Y(m.a[1]), x2: X(m.b[0]), y2: Y(m.b[1]) });
      else node("rect", { x: X(Math.min(m.a[0], m.b[0])), y: Y(Math.min(m.a[1], m.b[1])), width: Math.abs(m.b[0] - m.a[0]) * g.s, height: Math.abs(m.b[1] - m.a[1]) * g.s });
      if (m.text) node("text", { x: X(m.b[0]) + 6, y: Y(m.b[1]) - 6 }, m.text);
    });
  }
  function record(m) {
    measures.push(m);
    const li = document.createElement("li");
    li.className = "measure-" + m.kind;
    li.textContent = "Image " + (m.i + 1) + ": " + m.text;
    list.appendChild(li);
    draw();
  }
  function finish(m) {
    const dx = m.b[0] - m.a[0], dy = m.b[1] - m.a[1];
    if (Math.abs(dx) < 1 && Math.abs(dy) < 1) { draw(); return; }
    if (m.kind === "length") {
      const sp = spacing();
      m.text = sp ? Math.hypot(dx * sp[1], dy * sp[0]).toFixed(1) + " mm" : Math.hypot(dx, dy).toFixed(1) + " px (no pixel spacing)";
      record(m);
      return;
    }
    roiStats(m).then(function (text) { m.text = text; record(m); });
  }
  function roiStats(m) {
    // the decoded frame (WADO-RS frames, octet-stream), rescaled to modality units
    const uid = uids[m.i];
    return fetch(base + uid + "/frames/1", { headers: { Accept: 'multipart/related; type="application/octet-stream"' }, credentials: "same-origin" })
      .then(function (r) {
        if (!r.ok) return Promise.reject(r.status);
        const boundary = /boundary="?([^";]+)"?/.exec(r.headers.get("content-type") || "")[1];
        return r.arrayBuffer().then(function (buf) { return framePixels(new Uint8Array(buf), boundary); });
      })
      .then(function (bytes) {
        const rows = num("00280010"), cols = num("00280011"), bits = num("00280100") || 16;
        const signed = num("00280103") === 1, slope = num("00281053") === null ? 1 : num("00281053");
        const icpt = num("00281052") === null ? 0 : num("00281052");
        const buf = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
        const px = bits === 8 ? new Uint8Array(buf) : (signed ? new Int16Array(buf) : new Uint16Array(buf));
        const x0 = Math.max(0, Math.floor(Math.min(m.a[0], m.b[0]))), x1 = Math.min(cols, Math.ceil(Math.max(m.a[0], m.b[0])));
        const y0 = Math.max(0, Math.floor(Math.min(m.a[1], m.b[1]))), y1 = Math.min(rows, Math.ceil(Math.max(m.a[1], m.b[1])));
        let n = 0, sum = 0, sq = 0;
        for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++) { const v = px[y * cols + x] * slope + icpt; n++; sum += v; sq += v * v; }
        if (!n) return "empty ROI";
        const mean = sum / n, sd = n > 1 ? Math.sqrt(Math.max(0, (sq - n * mean * mean) / (n - 1))) : 0;
        const unit = root.dataset.modality === "CT" ? " HU" : "";
        return "mean " + mean.toFixed(1) + unit + ", SD " + sd.toFixed(1) + unit + ", n " + n;
      })
      .catch(function (status) { return "ROI not available (" + status + ")"; });
  }
  function framePixels(data, boundary) {
    // the body of the first part of a multipart/related answer
    const text = new TextDecoder("latin1").decode(data.subarray(0, Math.min(data.length, 2048)));
    const start = text.indexOf("\r\n\r\n") + 4;
    const tail = new TextEncoder().encode("\r\n--" + boundary);
    let end = data.length - tail.length;
    for (; end > start; end--) {
      let k = 0;
      while (k < tail.length && data[end + k] === tail[k]) k++;
      if (k === tail.length) break;
    }
    return data.subarray(start, end);
  }
  document.getElementById("clear-measures").addEventListener("click", function () {
    measures.length = 0; list.textContent = ""; draw();
  });

  // ---- cine ----
  const cineButton = document.getElementById("cine");
  function stopCine() {
    clearInterval(cineTimer); cineTimer = null;
    cineButton.textContent = "Play"; cineButton.setAttribute("aria-pressed", "false");
  }
  function startCine() {
    const fps = Number(document.getElementById("cine-fps").value) || 10;
    clearInterval(cineTimer);
    cineTimer = setInterval(function () { show(state.i + 1 >= uids.length ? 0 : state.i + 1); }, 1000 / fps);
    cineButton.textContent = "Pause"; cineButton.setAttribute("aria-pressed", "true");
  }
  cineButton.addEventListener("click", function () { if (cineTimer) stopCine(); else startCine(); });
  document.getElementById("cine-fps").addEventListener("change", function () { if (cineTimer) startCine(); });
  function reset() { state.zoom = 1; state.x = 0; state.y = 0; transform(); }
  document.getElementById("zoom-in").addEventListener("click", function () { state.zoom = Math.min(8, state.zoom * 1.2); transform(); });
  document.getElementById("zoom-out").addEventListener("click", function () { state.zoom = Math.max(0.25, state.zoom / 1.2); transform(); });
  document.getElementById("reset").addEventListener("click", reset);

  fetch("/viewer/dictionary.json", { credentials: "same-origin" })
    .then(function (r) { return r.ok ? r.json() : {}; })
    .then(function (d) { names = d; filterHeader(); loadHeader(); });
  window.addEventListener("resize", function () { draw(); });
  transform();
  showReadout();
  show(0);
  viewport.focus();
})();
