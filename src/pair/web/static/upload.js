// Upload page: files, folders and zips, one XHR per file to /api/upload, per-file progress.
"use strict";
(function () {
  const zone = document.getElementById("dropzone");
  if (!zone) return;
  const table = document.getElementById("upload-table");
  const tbody = table.querySelector("tbody");
  const outcomes = document.getElementById("outcome-table");
  const counts = { stored: 0, duplicate: 0, quarantined: 0, rejected: 0 };
  const queue = [];
  let running = 0, done = 0, total = 0;
  const CONCURRENCY = 3;

  function cell(tr, content) {
    const td = document.createElement("td");
    if (typeof content === "string") td.textContent = content; else td.appendChild(content);
    tr.appendChild(td);
    return td;
  }
  function updateSummary() {
    document.getElementById("summary").hidden = false;
    Object.keys(counts).forEach(function (k) { document.getElementById("n-" + k).textContent = counts[k]; });
    document.getElementById("upload-status").textContent =
      done === total ? "Finished: " + total + " file" + (total === 1 ? "" : "s") + " sent." : "Sending " + done + " of " + total + " files…";
  }
  const studies = new Set();
  function addStudy(uid) {
    // each newly stored study once, linked to its case page
    if (!uid || studies.has(uid)) return;
    studies.add(uid);
    const list = document.getElementById("new-studies");
    list.hidden = false;
    const li = document.createElement("li");
    const a = document.createElement("a");
    a.href = "/studies/" + encodeURIComponent(uid);
    a.textContent = "Study " + uid;
    li.appendChild(a);
    list.querySelector("ul").appendChild(li);
  }
  function addOutcome(item) {
    outcomes.hidden = false;
    const tr = document.createElement("tr");
    cell(tr, item.file);
    const badge = document.createElement("span");
    badge.className = "badge " + (item.outcome === "quarantined" ? "badge-warn" : "badge-pos");
    badge.textContent = item.outcome;
    cell(tr, badge);
    cell(tr, item.reason || "");
    outcomes.querySelector("tbody").appendChild(tr);
  }
  function enqueue(file, label) {
    table.hidden = false;
    const tr = document.createElement("tr");
    cell(tr, label);
    const bar = document.createElement("progress");
    bar.max = 100; bar.value = 0;
    bar.setAttribute("aria-label", "Upload progress of " + label);
    cell(tr, bar);
    const result = cell(tr, "waiting");
    tbody.appendChild(tr);
    queue.push({ file: file, label: label, bar: bar, result: result });
    total += 1;
    updateSummary();
    pump();
  }
  function pump() {
    while (running < CONCURRENCY && queue.length) send(queue.shift());
  }
  function finish(job, text, ok) {
    job.result.textContent = text;
    job.result.className = ok ? "" : "field-error";
    running -= 1; done += 1;
    updateSummary();
    pump();
  }
  function send(job) {
    running += 1;
    job.result.textContent = "sending…";
    const xhr = new XMLHttpRequest();
    const form = new FormData();
    form.append("files", job.file, job.label);
    xhr.open("POST", "/api/upload");
    xhr.setRequestHeader("X-CSRF-Token", PAIR.csrf());
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.onprogress = function (ev) { if (ev.lengthComputable) job.bar.value = Math.round(100 * ev.loaded / ev.total); };
    xhr.onload = function () {
      job.bar.value = 100;
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch (e) { body = null; }
      if (xhr.status !== 200 || !body) {
        counts.rejected += 1;
        finish(job, "failed: " + ((body && body.message) || ("HTTP " + xhr.status)), false);
        return;
      }
      const parts = [];
      ["stored", "duplicate", "quarantined", "rejected"].forEach(function (k) {
        counts[k] += body[k];
        if (body[k]) parts.push(body[k] + " " + k);
      });
      body.items.forEach(function (item) {
        if (item.outcome === "rejected" || item.outcome === "quarantined") addOutcome(item);
        if (item.outcome === "stored" || item.outcome === "duplicate") addStudy(item.study_uid);
      });
      if (counts.quarantined) document.getElementById("quarantine-note").hidden = false;
      finish(job, parts.join(", ") || "nothing in file", !(body.rejected || body.quarantined));
    };
    xhr.onerror = function () { counts.rejected += 1; finish(job, "network error", false); };
    xhr.send(form);
  }
  function walk(entry, prefix) {
    if (entry.isFile) {
      entry.file(function (f) { enqueue(f, prefix + f.name); });
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      const readAll = function () {
        reader.readEntries(function (entries) {
          if (!entries.length) return;
          entries.forEach(function (e) { walk(e, prefix + entry.name + "/"); });
          readAll();
        });
      };
      readAll();
    }
  }
  zone.addEventListener("dragover", function (ev) { ev.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", function () { zone.classList.remove("over"); });
  zone.addEventListener("drop", function (ev) {
    ev.preventDefault();
    zone.classList.remove("over");
    const items = ev.dataTransfer.items;
    if (items && items.length && items[0].webkitGetAsEntry) {
      for (let i = 0; i < items.length; i++) {
        const entry = items[i].webkitGetAsEntry();
        if (entry) walk(entry, "");
      }
    } else {
      Array.prototype.forEach.call(ev.dataTransfer.files, function (f) { enqueue(f, f.name); });
    }
  });
  zone.addEventListener("keydown", function (ev) {
    if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); document.getElementById("pick-files").click(); }
  });
  ["pick-files", "pick-folder"].forEach(function (id) {
    document.getElementById(id).addEventListener("change", function (ev) {
      Array.prototype.forEach.call(ev.target.files, function (f) { enqueue(f, f.webkitRelativePath || f.name); });
      ev.target.value = "";
    });
  });
})();
