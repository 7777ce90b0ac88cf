// Expiry countdowns: every <time class="countdown" datetime="..."> shows the time left, updated each second.
// A static file, as the Content-Security-Policy allows no inline script.
(function () {
  "use strict";
  function left(until) {
    var seconds = Math.floor((until - Date.now()) / 1000);
    if (isNaN(seconds)) return null;
    if (seconds <= 0) return "expired";
    var h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
    var pad = function (n) { return (n < 10 ? "0" : "") + n; };
    if (h) return "in " + h + "h " + pad(m) + "m";
    return m ? "in " + m + "m " + pad(s) + "s" : "in " + s + "s";
  }
  function tick() {
    document.querySelectorAll("time.countdown").forEach(function (el) {
      var text = left(Date.parse(el.getAttribute("datetime")));
      if (text !== null && el.textContent !== text) el.textContent = text;
    });
  }
  setInterval(tick, 1000);
})();

// A form marked data-autosubmit posts itself once the page loads (the single sign-on hand-over,
// which also shows a Continue button for a browser without script).
(function () {
  "use strict";
  document.querySelectorAll("form[data-autosubmit]").forEach(function (form) { form.submit(); });
})();
