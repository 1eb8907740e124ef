// Report form: live evaluation (relevance, preview), autosave and signing through the JSON API.
// All logic lives on the server (pair.reporting); this script only collects values and shows
// what the server answers. Cookie-authenticated API calls carry the X-CSRF-Token header.
"use strict";
(function () {
  const form = document.getElementById("report-form");
  if (!form) return;
  const reportId = form.dataset.report;
  const moduleId = form.dataset.module;
  const editable = form.dataset.editable === "true";
  // The report revision this page holds: sent with every save and the sign, so a change made
  // meanwhile in another window or by another user gives 409 instead of being overwritten.
  let revision = parseInt(form.dataset.revision, 10);
  const fields = Array.from(form.querySelectorAll(".rfield"));
  const formError = document.getElementById("form-error");
  const saveStatus = document.getElementById("save-status");
  const signButton = document.getElementById("sign-button");
  let relevant = null; // element ids the last evaluation found relevant
  let evalTimer = null, saveTimer = null, evalSeq = 0, dirty = false;
  // Saves and signing run one after another (a save still in flight must never race a sign).
  let queue = Promise.resolve(true), signed = false;
  function serial(fn) { queue = queue.then(fn, fn); return queue; }

  function api(method, url, body) {
    return fetch(url, {
      method: method,
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json", "X-CSRF-Token": PAIR.csrf() },
      body: body === undefined ? undefined : JSON.stringify(body),
    }).then(function (resp) {
      return resp.text().then(function (text) {
        let data = null;
        try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
        return { status: resp.status, ok: resp.ok, data: data };
      });
    });
  }

  function valueOf(field) {
    const type = field.dataset.type;
    if (type === "choice") {
      const on = field.querySelector("input:checked");
      return on && on.value !== "" ? on.value : null;
    }
    if (type === "multichoice") {
      const vals = Array.from(field.querySelectorAll("input:checked")).map(function (i) { return i.value; });
      return vals.length ? vals : null;
    }
    const input = field.querySelector("input, textarea");
    const raw = input.value.trim();
    if (raw === "") return null;
    if (type === "integer" && /^-?\d+$/.test(raw)) return parseInt(raw, 10);
    if (type === "numeric" && !isNaN(Number(raw))) return Number(raw);
    return raw; // the server says what is wrong with it
  }

  function collect(onlyRelevant) {
    const inputs = {};
    fields.forEach(function (f) {
      const id = f.dataset.element;
      if (onlyRelevant && relevant && relevant.indexOf(id) < 0) return;
      const v = valueOf(f);
      if (v !== null) inputs[id] = v;
    });
    return inputs;
  }

  function clearErrors() {
    formError.hidden = true;
    formError.textContent = "";
    fields.forEach(function (f) {
      const err = document.getElementById("err-" + f.dataset.element);
      err.hidden = true; err.textContent = "";
      f.classList.remove("has-error");
      f.querySelectorAll("input, textarea").forEach(function (i) { i.removeAttribute("aria-invalid"); });
    });
  }

  function showErrors(data, fallback) {
    const details = (data && Array.isArray(data.details)) ? data.details : [];
    let placed = 0;
    details.forEach(function (d) {
      if (!d || !d.element) return;
      const err = document.getElementById("err-" + d.element);
      if (!err) return;
      const field = err.closest(".rfield");
      field.hidden = false;
      field.classList.add("has-error");
      field.querySelectorAll("input, textarea").forEach(function (i) { i.setAttribute("aria-invalid", "true"); });
      err.textContent = d.message;
      err.hidden = false;
      placed += 1;
    });
    formError.textContent = placed ? "Please correct the " + placed + " marked field" + (placed === 1 ? "" : "s") + "."
      : ((data && data.message) || fallback);
    formError.hidden = false;
  }

  function show(ev) {
    relevant = ev.relevant;
    fields.forEach(function (f) {
      const id = f.dataset.element;
      f.hidden = ev.relevant.indexOf(id) < 0;
      f.classList.toggle("is-required", ev.required.indexOf(id) >= 0);
    });
    Object.keys(ev.computed).forEach(function (id) {
      const dd = document.getElementById("comp-" + id);
      if (dd) dd.textContent = ev.computed_labels[id];
    });
    ["findings", "impression", "recommendation"].forEach(function (name) {
      const p = document.getElementById("preview-" + name);
      const waiting = name === "impression" && ev.missing.length ? "No category until the required findings are answered." : "";
      if (p) p.textContent = ev.sections[name] || waiting;
    });
    const missing = document.getElementById("preview-missing");
    missing.textContent = ev.missing.length ? "Still needed: " + ev.missing.map(function (id) {
      const f = form.querySelector('[data-element="' + id + '"]');
      return f ? f.dataset.label : id;
    }).join("; ") + "." : "All required findings entered.";
  }

  function labels(ev) {
    // computed values shown with their choice labels (read from the page's own data)
    ev.computed_labels = {};
    Object.keys(ev.computed).forEach(function (id) {
      const v = ev.computed[id];
      const dd = document.getElementById("comp-" + id);
      const map = dd && dd.dataset.labels ? JSON.parse(dd.dataset.labels) : {};
      ev.computed_labels[id] = v === null || v === undefined ? "—" : (map[v] || String(v));
    });
    return ev;
  }

  function evaluateNow() {
    const seq = ++evalSeq;
    return api("POST", "/api/reports/modules/" + encodeURIComponent(moduleId) + "/evaluate", { inputs: collect(false) })
      .then(function (r) {
        if (seq !== evalSeq) return false;
        clearErrors();
        if (!r.ok) { showErrors(r.data, "Evaluation failed (HTTP " + r.status + ")."); return false; }
        show(labels(r.data));
        return true;
      });
  }

  function saveNow() {
    clearTimeout(saveTimer);
    if (!editable || !dirty || signed) return Promise.resolve(true);
    saveStatus.textContent = "Saving…";
    return api("PUT", "/api/reports/" + reportId + "/inputs", { inputs: collect(true), expected_revision: revision }).then(function (r) {
      if (!r.ok) {
        saveStatus.textContent = r.status === 409 ? "Not saved: the report changed elsewhere; reload the page." : "Not saved.";
        showErrors(r.data, "Saving failed (HTTP " + r.status + ").");
        return false;
      }
      revision = r.data.revision;
      dirty = false;
      saveStatus.textContent = "Draft saved " + new Date().toLocaleTimeString() + ".";
      return true;
    });
  }

  function changed() {
    if (!editable) return;
    dirty = true;
    clearTimeout(evalTimer);
    evalTimer = setTimeout(function () {
      evaluateNow().then(function (ok) {
        clearTimeout(saveTimer);
        if (ok) saveTimer = setTimeout(function () { serial(saveNow); }, 500);
      });
    }, 250);
  }

  form.addEventListener("input", changed);
  form.addEventListener("change", changed);
  form.addEventListener("submit", function (ev) { ev.preventDefault(); });

  form.addEventListener("click", function (ev) {
    const btn = ev.target.closest && ev.target.closest("[data-apply]");
    if (!btn) return;
    const field = btn.closest(".rfield");
    const value = btn.closest(".ai-suggestion").dataset.value;
    const radio = field.querySelector('input[value="' + CSS.escape(value) + '"]');
    if (radio) { radio.checked = true; radio.focus(); }
    else { const input = field.querySelector("input, textarea"); if (input) input.value = value; }
    changed();
  });

  if (signButton) {
    signButton.addEventListener("click", function () {
      signButton.disabled = true;
      clearTimeout(evalTimer);
      clearTimeout(saveTimer);
      evaluateNow().then(function () {
        return serial(function () { dirty = true; return saveNow(); });
      }).then(function (saved) {
        if (!saved) { signButton.disabled = false; return; }
        const signWith = function (confirmOverride) {
          return serial(function () { return api("POST", "/api/reports/" + reportId + "/sign", { expected_revision: revision, confirm_override: confirmOverride }); });
        };
        return signWith(false).then(function (r) {
          // a category assigned against the findings is signed only after an explicit yes
          if (r.status === 409 && r.data && r.data.details && r.data.details.contradiction) {
            if (!window.confirm(r.data.message)) { signButton.disabled = false; return null; }
            return signWith(true);
          }
          return r;
        }).then(function (r) {
          if (r === null || r === undefined) return;
          if (!r.ok) {
            signButton.disabled = false;
            showErrors(r.data, "Signing failed (HTTP " + r.status + ").");
            const first = form.querySelector(".has-error input, .has-error textarea");
            if (first) first.focus();
            return;
          }
          signed = true;
          window.location.href = "/reports/" + reportId + "?signed=1";
        });
      });
    });
  }
  if (editable) evaluateNow();
})();
