// Keyboard shortcuts for the study page: Space/Enter flip, 1-5 rate, U undo.
// Every shortcut clicks a real button, so htmx (or, without it, the form) does the rest.
(function () {
  "use strict";
  var autoFocused = null;
  // htmx inserts the new #study content at the swap but wires up its hx-get/hx-post
  // forms only when the swap settles (htmx.config.defaultSettleDelay, 20 ms later). A
  // shortcut in between would click a button htmx does not handle yet, and the browser
  // would submit its form as a full page load, so shortcuts wait for the settle.
  var settling = false;

  document.addEventListener("htmx:afterSwap", function () {
    settling = true;
  });
  document.addEventListener("htmx:swapError", function () {
    settling = false;
  });
  document.addEventListener("htmx:afterSettle", function () {
    settling = false;
    autoFocused = document.activeElement;
  });
  document.addEventListener("DOMContentLoaded", function () {
    autoFocused = document.activeElement;
  });

  function isShortcut(key) {
    return key === " " || key === "Enter" || (key >= "1" && key <= "5") || key === "u" || key === "U";
  }

  function click(selector) {
    var el = document.querySelector("#study " + selector);
    if (el) el.click();
    return Boolean(el);
  }

  document.addEventListener("keydown", function (event) {
    if (!document.getElementById("study")) return;
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    var target = event.target;
    if (target.closest && target.closest("input, textarea, select, summary, a")) return;
    var key = event.key;
    if (settling) {
      if (isShortcut(key)) event.preventDefault();
      return;
    }
    if (key === " " || key === "Enter") {
      // A focused rating button reached by Tab keeps the browser's own Space/Enter;
      // one we focused for the student does not, so a reflex key press rates nothing.
      if (target.matches("button") && target !== autoFocused) return;
      event.preventDefault();
      click("#show-answer");
    } else if (key >= "1" && key <= "5") {
      if (click('button[data-rating="' + key + '"]')) event.preventDefault();
    } else if (key === "u" || key === "U") {
      if (click("#undo")) event.preventDefault();
    }
  });
})();
