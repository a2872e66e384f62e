// FieldSync console: live updates over /console/live (session cookie, no token in the page) and in-place refresh of
// the parts of the page that carry an id. No inline script anywhere: the CSP allows only files from this origin.
(function () {
  "use strict";
  var REFRESH_IDS = ["rows", "map", "count", "crews-list", "conflicts-list", "ticket-main"];
  var status = document.getElementById("live-status");
  if (!status) { return; }  // signed out: nothing to follow
  var position = document.body.getAttribute("data-position") || "";
  var delay = 500, timer = null, refreshing = false, again = false, socket = null;

  function setState(state, text) {
    status.setAttribute("data-state", state);
    status.textContent = text;
  }

  function selectedIds() {
    var ids = {};
    document.querySelectorAll("input[name=sel]:checked").forEach(function (box) { ids[box.value.split(":")[0]] = true; });
    return ids;
  }

  function refresh() {
    if (refreshing) { again = true; return; }
    refreshing = true;
    fetch(location.href, { credentials: "same-origin", headers: { "X-Live-Refresh": "1" } })
      .then(function (resp) { return resp.ok ? resp.text() : null; })
      .then(function (html) {
        if (html === null) { return; }
        var doc = new DOMParser().parseFromString(html, "text/html");
        var keep = selectedIds();
        REFRESH_IDS.forEach(function (id) {
          var old = document.getElementById(id), fresh = doc.getElementById(id);
          if (!old || !fresh) { return; }
          if (id === "rows") {
            fresh.querySelectorAll("tr[id]").forEach(function (row) {
              var before = document.getElementById(row.id);
              if (before && before.getAttribute("data-version") !== row.getAttribute("data-version")) { row.classList.add("changed"); }
            });
          }
          old.replaceWith(document.importNode(fresh, true));
        });
        document.querySelectorAll("input[name=sel]").forEach(function (box) {
          if (keep[box.value.split(":")[0]]) { box.checked = true; }
        });
        if (window.htmx) { window.htmx.process(document.body); }
      })
      .catch(function () { /* the next event or reconnect refreshes again */ })
      .then(function () {
        refreshing = false;
        if (again) { again = false; schedule(); }
      });
  }

  function schedule() {
    if (timer) { return; }
    timer = setTimeout(function () { timer = null; refresh(); }, 150);
  }

  function connect() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var url = scheme + location.host + "/console/live" + (position ? "?after=" + encodeURIComponent(position) : "");
    socket = new WebSocket(url);
    socket.onopen = function () { delay = 500; setState("live", "Live"); };
    socket.onmessage = function (msg) {
      var frame;
      try { frame = JSON.parse(msg.data); } catch (e) { return; }
      if (frame.type === "event") {
        position = String(frame.position);
        schedule();
      } else if (frame.type === "refetch") {
        schedule();
      }
    };
    socket.onclose = function (ev) {
      socket = null;
      if (ev.code === 4003 || ev.code === 4001) { setState("off", "Signed out: live updates stopped"); return; }
      setState("reconnecting", "Reconnecting…");
      setTimeout(function () { connect(); schedule(); }, delay);
      delay = Math.min(delay * 2, 5000);
    };
  }

  document.addEventListener("click", function (ev) {
    var t = ev.target;
    if (t && t.matches && t.matches("[data-select-all]")) {
      document.querySelectorAll("input[name=sel]").forEach(function (box) { box.checked = t.checked; });
    }
  });
  connect();
}());
