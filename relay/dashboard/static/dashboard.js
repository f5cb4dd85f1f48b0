/* relay dashboard: times in the viewer's time zone, and sections that refresh themselves.
 *
 * A section with data-refresh="/dashboard/data/..." is re-fetched every few seconds; the answer is JSON
 * whose "html" member the server rendered (and escaped) from the same code as the page, and whose
 * "digest" tells whether it changed. Nothing here builds HTML from data. Forms work without this file; it only stops double submits.
 */
(function () {
  "use strict";

  var full = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
  var hour = new Intl.DateTimeFormat(undefined, { weekday: "short", hour: "2-digit", minute: "2-digit" });
  var clock = new Intl.DateTimeFormat(undefined, { timeStyle: "medium" });
  var paused = false;
  var stopped = false;
  var failing = false;

  function localize(root) {
    var nodes = root.querySelectorAll("[data-ts]");
    for (var i = 0; i < nodes.length; i++) {
      var el = nodes[i];
      var ms = Number(el.getAttribute("data-ts"));
      if (!isFinite(ms)) continue;
      var format = el.getAttribute("data-fmt") === "hour" ? hour : full;
      el.textContent = format.format(new Date(ms)) + (el.getAttribute("data-suffix") || "");
    }
  }

  function text(id, value) {
    var el = document.getElementById(id);
    if (el && el.textContent !== value) el.textContent = value;
  }

  // after a section is replaced, put the focus back on the same link or control
  function focusKey(region) {
    var active = document.activeElement;
    if (!active || active === document.body || !region.contains(active)) return null;
    if (active.id) return "#" + CSS.escape(active.id);
    var target = active.getAttribute("href");
    return target ? 'a[href="' + CSS.escape(target) + '"]' : null;
  }

  function expired() {
    stopped = true;
    var box = document.getElementById("expired");
    if (!box) return;
    box.textContent = "Your session has expired, so this page stopped updating. ";
    var link = document.createElement("a");
    link.href = "/dashboard/login?next=" + encodeURIComponent(location.pathname + location.search);
    link.textContent = "Log in again";
    box.appendChild(link);
    box.hidden = false;
  }

  function refresh(region, interval) {
    var timer = function () { setTimeout(function () { refresh(region, interval); }, interval); };
    if (stopped) return;
    if (paused || document.hidden) return timer();
    fetch(region.getAttribute("data-refresh"), {
      credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" }
    }).then(function (resp) {
      if (resp.status === 401) { expired(); return null; }
      return resp.json().then(function (doc) {
        if (!resp.ok) throw new Error(doc.error || "HTTP " + resp.status);
        return doc;
      });
    }).then(function (doc) {
      if (!doc) return;
      var now = clock.format(new Date());
      if (failing) { failing = false; text("live", "Updates resumed."); }
      if (doc.digest !== region.getAttribute("data-digest")) {
        var key = focusKey(region);
        region.innerHTML = doc.html;
        region.setAttribute("data-digest", doc.digest);
        localize(region);
        if (key) {
          var again = region.querySelector(key);
          if (again) again.focus();
        }
      }
      if (doc.summary !== region.getAttribute("data-summary")) {
        region.setAttribute("data-summary", doc.summary);
        text("live", doc.summary + " (" + now + ")");
      }
      text("checked", "Checked " + now + ".");
      timer();
    }).catch(function (err) {
      if (!failing) text("live", "Update failed (" + err.message + "); retrying.");
      failing = true;
      if (!stopped) timer();
    });
  }

  function start() {
    localize(document);
    var zone = document.getElementById("tz");
    if (zone) zone.textContent = Intl.DateTimeFormat().resolvedOptions().timeZone || "your time zone";

    var footer = document.querySelector("[data-refresh-ms]");
    var interval = footer ? Number(footer.getAttribute("data-refresh-ms")) || 5000 : 5000;
    var regions = document.querySelectorAll("[data-refresh]");
    for (var i = 0; i < regions.length; i++) {
      var region = regions[i];
      if (!region.getAttribute("data-refresh")) continue;
      setTimeout(refresh.bind(null, region, interval), interval);
    }

    var pause = document.getElementById("pause");
    if (pause) {
      pause.addEventListener("click", function () {
        paused = !paused;
        pause.setAttribute("aria-pressed", paused ? "true" : "false");
        pause.textContent = paused ? "Resume updates" : "Pause updates";
        text("live", paused ? "Updates paused." : "Updates resumed.");
      });
    }

    // a form marked data-once sends once: its button is disabled after the first submit
    var forms = document.querySelectorAll("form[data-once]");
    for (var j = 0; j < forms.length; j++) {
      forms[j].addEventListener("submit", function (event) {
        var form = event.currentTarget;
        if (form.getAttribute("data-sent")) { event.preventDefault(); return; }
        form.setAttribute("data-sent", "1");
        var button = form.querySelector("button[type=submit]");
        if (button) setTimeout(function () { button.disabled = true; button.textContent = "Sending…"; }, 0);
      });
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
