// Keyboard shortcuts for the study page: Space/Enter flip, 1-5 rate, U undo.
// Every shortcut clicks a real button, so htmx (or, without it, the form) does the rest.
(function () {
  "use strict";
  var autoFocused = null;
  // htmx inserts the new #study content at the swap but wires up its hx-get/hx-post
  // forms only when the swap settles (htmx.config.defaultSettleDelay, 20 ms later). A
  // click in between would submit the form as a full page load, so a shortcut pressed
  // then is held and run as soon as the swap settles.
  var settling = false;
  var pending = null;

  document.addEventListener("htmx:afterSwap", function () {
    settling = true;
  });
  document.addEventListener("htmx:swapError", function () {
    settling = false;
    pending = null;
  });
  document.addEventListener("htmx:afterSettle", function () {
    settling = false;
    autoFocused = document.activeElement;
    if (pending) {
      var key = pending;
      pending = null;
      handle(key, document.activeElement);
    }
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

  function handle(key, target) {
    if (key === " " || key === "Enter") {
      // A button the student reached with Tab gets pressed; the one we focused for them
      // does not, so a reflex Space after flipping rates nothing.
      if (target && target.matches && target.matches("#study button") && target !== autoFocused) {
        target.click();
      } else {
        click("#show-answer");
      }
    } else if (key >= "1" && key <= "5") {
      click('button[data-rating="' + key + '"]');
    } else if (key === "u" || key === "U") {
      click("#undo");
    }
  }

  document.addEventListener("keydown", function (event) {
    if (!document.getElementById("study")) return;
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    var target = event.target;
    if (target.closest && target.closest("input, textarea, select, summary, a")) return;
    if (!isShortcut(event.key)) return;
    event.preventDefault();
    if (settling) {
      pending = event.key;
      return;
    }
    handle(event.key, target);
  });
})();
