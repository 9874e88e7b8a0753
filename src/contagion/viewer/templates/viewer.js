// The transcript viewer. Every text from the run (model-written or not) is put in the page with
// textContent or as a text node, never as HTML: a transcript is shown, never run.
(function () {
  "use strict";

  function readJSON(id) {
    var node = document.getElementById(id);
    return node ? JSON.parse(node.textContent) : null;
  }

  // el("div", {class: "x"}, child, "text", ...) — children that are strings become text nodes.
  function el(tag, attrs) {
    var node = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (key) {
        var value = attrs[key];
        if (value === null || value === undefined || value === false) return;
        if (key === "class") node.className = value;
        else if (key === "text") node.textContent = String(value);
        else node.setAttribute(key, String(value));
      });
    }
    for (var i = 2; i < arguments.length; i++) {
      var child = arguments[i];
      if (child === null || child === undefined) continue;
      node.appendChild(typeof child === "object" ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function fmt(x, digits, signed) {
    if (x === null || x === undefined || !isFinite(x)) return "—";
    var s = Number(x).toFixed(digits === undefined ? 3 : digits);
    return signed && x > 0 ? "+" + s : s;
  }

  var index = readJSON("index-data") || {games: [], lazy: false};
  var embedded = readJSON("games-data") || {};
  var games = index.games;
  var fields = ["game", "composition", "intervention", "chat", "outcome", "model"];
  var selected = null;

  // -- filters -----------------------------------------------------------------------------------
  function optionValues(field) {
    var seen = {};
    games.forEach(function (g) { seen[String(g[field])] = true; });
    return Object.keys(seen).sort(function (a, b) {
      var na = Number(a), nb = Number(b);
      return (isFinite(na) && isFinite(nb)) ? na - nb : a.localeCompare(b);
    });
  }

  fields.forEach(function (field) {
    var select = document.getElementById("f-" + field);
    select.appendChild(el("option", {value: ""}, "all"));
    optionValues(field).forEach(function (v) { select.appendChild(el("option", {value: v}, v)); });
    select.addEventListener("change", renderList);
  });
  document.getElementById("reset").addEventListener("click", function () {
    fields.forEach(function (f) { document.getElementById("f-" + f).value = ""; });
    renderList();
  });

  function visibleGames() {
    var want = {};
    fields.forEach(function (f) { want[f] = document.getElementById("f-" + f).value; });
    return games.filter(function (g) {
      return fields.every(function (f) { return want[f] === "" || String(g[f]) === want[f]; });
    });
  }

  function renderList() {
    var list = document.getElementById("game-list");
    list.textContent = "";
    var shown = visibleGames();
    document.getElementById("count").textContent = shown.length + " of " + games.length + " games";
    shown.forEach(function (g) {
      var badges = el("span", {class: "l2"},
        el("span", {class: "badge" + (g.status === "failed" ? " failed" : "")}, g.outcome),
        el("span", null, "chat " + g.chat), el("span", null, "rep " + g.rep),
        g.injections ? el("span", {class: "badge inj"}, g.injections + " injections") : null,
        g.drift !== null ? el("span", {class: "badge" + (g.drift <= -index.notable ? " anti" : g.drift >= index.notable ? " pro" : ""),
                                       title: "mean pro-social index change of the measured agents"},
                              "drift " + fmt(g.drift, 3, true)) : null);
      var item = el("li", {"data-id": g.id, class: g.id === selected ? "active" : null, tabindex: "0"},
        el("div", {class: "l1"}, g.game + " · " + g.composition + " · " + g.intervention), badges);
      item.addEventListener("click", function () { openGame(g.id); });
      item.addEventListener("keydown", function (e) { if (e.key === "Enter") openGame(g.id); });
      list.appendChild(item);
    });
  }

  // -- one game ----------------------------------------------------------------------------------
  function loadGame(id, done) {
    if (embedded[id]) { done(embedded[id]); return; }
    if (!index.lazy) { done(null); return; }
    fetch("game/" + encodeURIComponent(id) + ".json").then(function (r) {
      if (!r.ok) throw new Error("HTTP " + r.status);
      return r.json();
    }).then(function (data) { embedded[id] = data; done(data); })
      .catch(function (err) { done(null, err); });
  }

  function openGame(id) {
    selected = id;
    if (location.hash !== "#game=" + id) history.replaceState(null, "", "#game=" + id);
    Array.prototype.forEach.call(document.querySelectorAll("#game-list li"), function (li) {
      li.classList.toggle("active", li.getAttribute("data-id") === id);
    });
    loadGame(id, function (data, err) {
      var pane = document.getElementById("detail");
      pane.textContent = "";
      if (!data) {
        pane.appendChild(el("p", {class: "empty"}, "Game " + id + " could not be loaded" + (err ? ": " + err.message : ".")));
        return;
      }
      renderGame(pane, data);
      pane.scrollTop = 0;
    });
  }

  function scoreboard(g) {
    var head = el("tr", null, el("th", null, "round"));
    g.detail.forEach(function (p) { head.appendChild(el("th", null, p.name + " (" + p.seat + ")")); });
    var body = el("tbody");
    g.rounds.forEach(function (r) {
      var row = el("tr", null, el("td", {class: "num"}, r.round));
      r.actions.forEach(function (a, i) {
        row.appendChild(el("td", {class: a}, a + " · " + fmt(r.payoffs[i], 1)));
      });
      body.appendChild(row);
    });
    var total = el("tr", null, el("th", null, "total"));
    g.detail.forEach(function (p) { total.appendChild(el("th", null, fmt(p.total, 1))); });
    body.appendChild(total);
    return el("table", {class: "scoreboard"}, el("thead", null, head), body);
  }

  function traitTable(p) {
    var body = el("tbody");
    p.traits.forEach(function (t) {
      var cls = [t.notable ? "notable" : "", t.toward, t.trait === "prosocial-index" ? "index" : ""].join(" ");
      body.appendChild(el("tr", {class: cls.trim()},
        el("td", null, t.trait === "prosocial-index" ? "pro-social index" : t.trait + " (" + t.polarity + ")"),
        el("td", {class: "num"}, fmt(t.pre)), el("td", {class: "num"}, fmt(t.post)),
        el("td", {class: "num"}, fmt(t.change, 3, true))));
    });
    return el("div", null, el("strong", null, p.name + " (" + p.persona + ", " + p.backend + ")"),
      el("table", null, el("thead", null, el("tr", null, el("th", null, "trait"), el("th", null, "pre"),
        el("th", null, "post"), el("th", null, "change"))), body));
  }

  function messageView(m) {
    var kind = m.kind || m.role;
    if (kind === "system_prompt") {
      return el("div", {class: "msg system_prompt"},
        el("details", null, el("summary", null, "system prompt (persona and rules)"), el("div", {class: "body"}, m.text)));
    }
    var head = el("div", {class: "head"});
    if (kind === "injection") {
      head.appendChild(el("span", {class: "badge inj"}, "steering message injected"));
      if (m.intervention) head.appendChild(el("span", null, String(m.intervention)));
    } else {
      head.appendChild(el("span", null, m.role + (m.kind ? " · " + m.kind : "")));
    }
    if (m.speaker) head.appendChild(el("span", null, "from " + m.speaker));
    if (m.round !== undefined) head.appendChild(el("span", null, "round " + m.round));
    var cls = "msg " + m.role + " " + kind;
    if (m.reasoning) {
      // the model's own reasoning before this reply: recorded, never shown to the other players
      return el("div", {class: cls}, head,
        el("details", {class: "reasoning"}, el("summary", null, "reasoning (the model's own; the others never saw it)"),
          el("div", {class: "body"}, m.reasoning)),
        el("div", {class: "body"}, m.text));
    }
    return el("div", {class: cls}, head, el("div", {class: "body"}, m.text));
  }

  function conversation(container, p) {
    container.textContent = "";
    var msgs = el("div", {class: "msgs"});
    p.messages.forEach(function (m) { if (m.kind !== "trait_item") msgs.appendChild(messageView(m)); });
    if (p.injections.length) {
      container.appendChild(el("p", {class: "sub"}, p.injections.length + " steering message(s) injected into " +
        p.name + "'s context; reasons: " + p.injections.map(function (i) { return "round " + i.round + ": " + i.reason; }).join("; ")));
    }
    container.appendChild(msgs);
  }

  function renderGame(pane, g) {
    pane.appendChild(el("h2", null, g.game_title + " · " + g.composition + " · " + g.intervention));
    pane.appendChild(el("div", {class: "sub"}, "game " + g.id + " · model " + g.model + " · seed " + g.seed +
      " · rep " + g.rep + " · chat turns " + g.chat + " · " + g.rounds.length + "/" + g.rounds_planned +
      " rounds · " + g.outcome));
    if (g.status === "failed") pane.appendChild(el("div", {class: "error"}, g.error_full));
    if (g.rounds.length) {
      pane.appendChild(el("h3", null, "Actions and payoffs"));
      pane.appendChild(scoreboard(g));
    }
    var measured = g.detail.filter(function (p) { return p.traits.length; });
    if (measured.length) {
      pane.appendChild(el("h3", null, "Trait changes (post − pre)"));
      pane.appendChild(el("p", {class: "legend"}, "Highlighted: a change of at least " + index.notable +
        " — red toward the anti-social pole, green toward the pro-social pole."));
      var wrap = el("div", {class: "traits"});
      measured.forEach(function (p) { wrap.appendChild(traitTable(p)); });
      pane.appendChild(wrap);
    }
    if (g.detail.length) {
      pane.appendChild(el("h3", null, "Conversation, as each player saw it"));
      var tabs = el("div", {class: "tabs", role: "tablist"});
      var box = el("div", {role: "tabpanel"});
      g.detail.forEach(function (p, i) {
        var label = p.name + " (" + p.seat + ")" + (p.injections.length ? " · " + p.injections.length + " injected" : "");
        var b = el("button", {type: "button", role: "tab", "aria-selected": i === 0 ? "true" : "false"}, label);
        b.addEventListener("click", function () {
          Array.prototype.forEach.call(tabs.children, function (x) { x.setAttribute("aria-selected", "false"); });
          b.setAttribute("aria-selected", "true");
          conversation(box, p);
        });
        tabs.appendChild(b);
      });
      pane.appendChild(tabs);
      pane.appendChild(box);
      conversation(box, g.detail[0]);
    }
  }

  renderList();
  var match = /^#game=(.+)$/.exec(location.hash);
  if (match) openGame(decodeURIComponent(match[1]));
})();
