// Renders the maths that pymdownx.arithmatex (generic mode) leaves in <span|div class="arithmatex">,
// with the vendored KaTeX (no network). Re-runs on every page of Material's instant navigation.
(function () {
  function render(root) {
    root.querySelectorAll(".arithmatex").forEach(function (el) {
      if (el.dataset.katexDone) return;
      var tex = el.textContent.trim();
      var display = el.tagName === "DIV";
      // Strip the \( \) or \[ \] delimiters that arithmatex writes.
      tex = tex.replace(/^\\[\(\[]/, "").replace(/\\[\)\]]$/, "");
      try {
        katex.render(tex, el, { displayMode: display, throwOnError: false });
        el.dataset.katexDone = "1";
      } catch (err) {
        console.error("KaTeX could not render", tex, err);
      }
    });
  }
  if (typeof document$ !== "undefined") {
    document$.subscribe(function (ev) { render(ev.body || document.body); });
  } else {
    document.addEventListener("DOMContentLoaded", function () { render(document.body); });
  }
})();
