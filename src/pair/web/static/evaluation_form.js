// New-evaluation form: show only the fields of the chosen truth source, and only the chosen
// report module's categories (the others disabled, so they are not sent).
"use strict";
(function () {
  const truth = document.getElementById("f-truth");
  const module = document.getElementById("f-tmod");
  if (!truth) return;
  function update() {
    document.querySelectorAll("#truth-fields [data-truth]").forEach(function (el) {
      let show = el.dataset.truth === truth.value;
      if (show && el.dataset.module) show = module && el.dataset.module === module.value;
      el.hidden = !show;
      if (el.tagName === "FIELDSET") el.disabled = !show;
    });
  }
  truth.addEventListener("change", update);
  if (module) module.addEventListener("change", update);
  update();
})();
