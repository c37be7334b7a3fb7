// A chat room with presence and typing on herald-client. Served by a
// development node: `herald serve --static-dir clients/ts/example`, then
// open http://127.0.0.1:8080/app/?user=ann&room=chat:demo in two tabs.
import { Herald } from "./herald.min.js";

const params = new URLSearchParams(location.search);
const user = params.get("user") || `guest-${Math.random().toString(36).slice(2, 7)}`;
const room = params.get("room") || "chat:demo";
const $ = (id) => document.getElementById(id);
$("room").textContent = room;
$("me").textContent = user;

const wsUrl = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
// On a development node the token is the user id; in production, fetch a
// short-lived JWT from your backend here (getToken is called on every
// reconnect, so an expired token is replaced).
const herald = new Herald(wsUrl, { getToken: async () => user });

const status = (state) => {
  $("status").textContent = state;
  $("status").dataset.state = state;
};
for (const state of ["connected", "disconnected", "closed"]) herald.on(state, () => status(state));
herald.on("reconnecting", (e) => status(`reconnecting in ${Math.round(e.delayMs)} ms`));

const sub = herald.subscribe(room, { history: 50, presence: true });

function line(who, text, cls) {
  const li = document.createElement("li");
  if (who !== null) {
    const b = document.createElement("span");
    b.className = "who";
    b.textContent = who || "server";
    li.append(b);
  }
  li.append(text);
  if (cls) li.className = cls;
  $("messages").append(li);
  li.scrollIntoView({ block: "end" });
}

sub.on("message", (m) => {
  typists.delete(m.publisher);
  showTyping();
  line(m.publisher, m.text());
});
// A reconnect could not bring every missed message back (the node restarted
// with in-memory history, or history no longer reaches back): say so. What
// the room holds now follows as messages.
sub.on("recovered", () => line(null, "Some messages may be missing after the reconnect.", "note"));

const present = new Set();
function showPresence() {
  $("presence").replaceChildren(
    ...[...present].sort().map((u) => {
      const li = document.createElement("li");
      li.textContent = u === user ? `${u} (you)` : u;
      return li;
    }),
  );
}
sub.on("presence", (p) => {
  if (p.type === "snapshot") {
    present.clear();
    for (const u of p.users) present.add(u);
  } else if (p.type === "join") present.add(p.user);
  else present.delete(p.user);
  showPresence();
});

// Typing: others' indicators expire unless renewed; ours is sent at most
// every 2 s while keys are pressed, and cleared on send.
const typists = new Map();
function showTyping() {
  const names = [...typists.keys()].filter((u) => u !== user);
  $("typing").textContent = names.length ? `${names.join(", ")} ${names.length > 1 ? "are" : "is"} typing…` : "";
}
sub.on("typing", (t) => {
  clearTimeout(typists.get(t.user));
  if (t.active) typists.set(t.user, setTimeout(() => (typists.delete(t.user), showTyping()), 5000));
  else typists.delete(t.user);
  showTyping();
});
let lastTyping = 0;
$("text").addEventListener("input", () => {
  if (Date.now() - lastTyping > 2000) {
    lastTyping = Date.now();
    herald.typing(room, true);
  }
});

$("compose").addEventListener("submit", async (e) => {
  e.preventDefault();
  const text = $("text").value.trim();
  if (!text) return;
  $("text").value = "";
  lastTyping = 0;
  herald.typing(room, false);
  try {
    // Resolves once stored; while offline it waits in the client's queue
    // and is sent on reconnect, exactly once.
    await herald.publish(room, text);
  } catch (err) {
    line(null, `Not sent: ${err.message}`, "note");
  }
});
