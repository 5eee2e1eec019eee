// payhub checkout: the status changes on its own, the PIX code copies, the
// countdown counts. Same-origin only; the page works without it.
(function () {
  "use strict";
  var main = document.getElementById("checkout");
  if (!main) return;
  // Pago Seguro: the signed form goes to Pago Seguro's page at once (the
  // button stays for browsers without scripts, and after a declined try).
  var ps = document.getElementById("pagoseguro-form");
  if (ps && ps.dataset.auto === "true") { ps.submit(); return; }
  var refresh = document.querySelector("form.refresh");
  if (refresh) refresh.hidden = true;

  var copy = document.getElementById("copy");
  var code = document.getElementById("brcode");
  if (copy && code) {
    copy.hidden = false;
    copy.addEventListener("click", function () {
      var done = function () { document.getElementById("copy-done").textContent = main.dataset.copied; };
      if (navigator.clipboard && navigator.clipboard.writeText) {
        navigator.clipboard.writeText(code.value).then(done, function () { code.select(); document.execCommand("copy"); done(); });
      } else { code.select(); document.execCommand("copy"); done(); }
    });
  }

  var countdown = document.getElementById("countdown");
  if (countdown) {
    var until = Date.parse(countdown.dataset.expires);
    var tick = function () {
      var s = Math.max(0, Math.floor((until - Date.now()) / 1000));
      var m = Math.floor(s / 60), r = s % 60;
      countdown.textContent = m + ":" + (r < 10 ? "0" : "") + r;
    };
    tick();
    setInterval(tick, 1000);
  }

  var url = main.dataset.statusUrl;
  if (main.dataset.live !== "true" || !url) return;
  var status = document.getElementById("status");
  var poll = function () {
    fetch(url, { credentials: "omit", cache: "no-store", headers: { "Accept": "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (s) {
        if (!s) return;
        if (s.state !== status.dataset.status) {
          status.dataset.status = s.state;
          status.textContent = s.label;
          main.dataset.state = s.state;
        }
        if (s.final) {
          var pix = document.getElementById("pix");
          if (pix) pix.hidden = true;
          setTimeout(function () { window.location.assign(main.dataset.doneUrl); }, 1500);
          return;
        }
        if (s.hasCharge && main.dataset.hasCharge === "false") { window.location.reload(); return; }
        setTimeout(poll, 1500);
      })
      .catch(function () { setTimeout(poll, 3000); });
  };
  setTimeout(poll, 1000);
})();
