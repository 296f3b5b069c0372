// Click to enlarge: every figure of a chapter (a notebook's image output or a {figure}) opens at its full size in an
// overlay over the page; a click anywhere or Escape closes it. Loaded on every page from _static/ (Jupyter Book adds
// each .js/.css there as a page tag); no network, no library. The browser check (tests/book/rendered.py) requires
// every figure image to carry the `qk-zoomable` class this script sets.
(function () {
  "use strict";
  var SELECTOR = "article .cell_output img, article figure img";

  function close(overlay, opener) {
    overlay.remove();
    document.removeEventListener("keydown", overlay.qkKey);
    if (opener) opener.focus();
  }

  function open(img) {
    var overlay = document.createElement("div");
    overlay.className = "qk-zoom";
    overlay.setAttribute("role", "dialog");
    overlay.setAttribute("aria-label", "Figure at full size (click or press Escape to close)");
    overlay.tabIndex = -1;
    var big = document.createElement("img");
    big.src = img.currentSrc || img.src;
    big.alt = img.alt || "";
    overlay.appendChild(big);
    overlay.addEventListener("click", function () { close(overlay, img); });
    overlay.qkKey = function (event) { if (event.key === "Escape") close(overlay, img); };
    document.addEventListener("keydown", overlay.qkKey);
    document.body.appendChild(overlay);
    overlay.focus();
  }

  function setUp() {
    document.querySelectorAll(SELECTOR).forEach(function (img) {
      img.classList.add("qk-zoomable");
      img.tabIndex = 0;
      img.title = img.title || "Click to enlarge";
      img.addEventListener("click", function () { open(img); });
      img.addEventListener("keydown", function (event) {
        if (event.key === "Enter" || event.key === " ") { event.preventDefault(); open(img); }
      });
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", setUp);
  else setUp();
})();
