// Evaluation run page: poll the run's status until it is done or failed, then reload.
"use strict";
(function () {
  const box = document.getElementById("run-progress");
  if (!box) return;
  const url = "/api/evaluations/" + box.dataset.run;
  const bar = document.getElementById("run-bar");
  const text = document.getElementById("run-count");
  const status = document.getElementById("run-status");
  function poll() {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
      .then(function (run) {
        bar.max = Math.max(run.total, 1);
        bar.value = run.done;
        text.textContent = run.done + " / " + run.total + " inferences";
        status.textContent = status.dataset[run.status] || status.textContent;
        if (run.status === "done" || run.status === "failed") window.location.reload();
        else window.setTimeout(poll, 700);
      })
      .catch(function () { window.setTimeout(poll, 2000); });
  }
  poll();
})();
