// synclife console: live updates of the page from the lifecycle stream (server-sent events).
// Served as a file (the Content-Security-Policy allows no inline script); every value is set
// with textContent, never as HTML.
"use strict";

(function () {
  var STATUSES = ["PENDING", "ACTIVE", "SUSPENDED", "COMPLETED", "FAILED", "CANCELED", "ARCHIVED"];

  function setBadge(badge, status) {
    if (!badge || STATUSES.indexOf(status) < 0) { return; }
    badge.textContent = status;
    badge.className = "badge status-" + status.toLowerCase();
  }

  function setHolds(list, holds) {
    if (!list) { return; }
    while (list.firstChild) { list.removeChild(list.firstChild); }
    (holds || []).forEach(function (h) {
      var item = document.createElement("li");
      var label = document.createElement("b");
      label.textContent = String(h.hold || "");
      item.appendChild(label);
      var rest = "";
      if (h.by) { rest += " by " + h.by; }
      if (h.reason) { rest += ": " + h.reason; }
      if (h.until) { rest += " until " + h.until; }
      item.appendChild(document.createTextNode(rest));
      list.appendChild(item);
    });
  }

  function apply(change) {
    var id = String(change.sync_config_id || "");
    var targets = document.querySelectorAll("[data-sync]");
    for (var i = 0; i < targets.length; i++) {
      var target = targets[i];
      if (target.getAttribute("data-sync") !== id) { continue; }
      var version = target.querySelector("[data-role=version]");
      if (version) {
        var shown = parseInt(version.textContent, 10);
        if (!isNaN(shown) && change.version <= shown) { continue; }  // older than the page
        version.textContent = String(change.version);
      }
      setBadge(target.querySelector("[data-role=status]"), change.status);
      setHolds(target.querySelector("[data-role=holds]"), change.holds);
      target.classList.add("changed");
    }
  }

  var RETRY_MS = 5000;

  function connect() {
    var url = document.body.getAttribute("data-live");
    var indicator = document.getElementById("live");
    if (!url || !window.EventSource) { return; }
    var source = new EventSource(url);
    var lost = false;  // the stream broke: changes made meanwhile are not on the page
    source.addEventListener("ready", function () {
      if (lost) {  // back after a gap: read the page again rather than miss a change
        source.close();
        window.location.reload();
        return;
      }
      document.body.setAttribute("data-live-state", "ready");
      if (indicator) { indicator.textContent = "live"; indicator.className = "live on"; }
    });
    source.addEventListener("sync", function (event) {
      try { apply(JSON.parse(event.data)); } catch (e) { /* not ours */ }
    });
    source.addEventListener("reset", function () {
      source.close();
      window.location.reload();
    });
    source.addEventListener("signout", function () {  // the key or the session ended
      source.close();
      window.location.reload();
    });
    source.onerror = function () {
      lost = true;
      document.body.setAttribute("data-live-state", "retrying");
      if (indicator) { indicator.textContent = "live: reconnecting"; indicator.className = "live off"; }
      if (source.readyState === EventSource.CLOSED) {
        // Refused outright (e.g. a redirect to sign in): reload the page after a pause, which
        // shows the sign-in page or the current rows.
        window.setTimeout(function () { window.location.reload(); }, RETRY_MS);
      }
    };
  }

  function confirmations() {
    var forms = document.querySelectorAll("form[data-confirm]");
    for (var i = 0; i < forms.length; i++) {
      forms[i].addEventListener("submit", function (event) {
        if (!window.confirm(this.getAttribute("data-confirm"))) { event.preventDefault(); }
      });
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    connect();
    confirmations();
  });
})();
