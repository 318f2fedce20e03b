// The page's script: a Cap'n Web session with the Rust server that served it.
import { newWebSocketRpcSession } from "/capnweb.js";

const api = newWebSocketRpcSession(`ws://${location.host}/rpc`);
const $ = (id) => document.getElementById(id);

// A live counter: the server calls this function on every tick.
let counted = 0;
let onCount = () => {};
api.watch((n) => {
  $("count").textContent = String(n);
  counted += 1;
  onCount();
});

// A pipelined chain: `greeting` is called on the promise of `user`, so both calls
// go in one round trip.
async function greet(name) {
  const greeting = await api.user(name).greeting();
  $("greeting").textContent = greeting;
  return greeting;
}

// Streams: the server spells a word into a ReadableStream the page reads, and
// shouts back the words of a ReadableStream the page writes.
async function spell(word) {
  $("letters").textContent = "";
  const letters = [];
  for await (const letter of await api.spell(word)) {
    letters.push(letter);
    $("letters").textContent = letters.join(" ");
  }
  return letters.join(",");
}

async function shout(text) {
  const words = text.split(/\s+/).filter(Boolean);
  const stream = new ReadableStream({
    pull(controller) {
      if (words.length) controller.enqueue(words.shift());
      else controller.close();
    },
  });
  const shouted = await api.shout(stream);
  $("shouted").textContent = shouted;
  return shouted;
}

// The server writes the letters of a word, last first, into a WritableStream the
// page passes; the call returns once they are handed over, the close follows them.
async function mirror(word) {
  const letters = [];
  let closed;
  const done = new Promise((resolve, reject) => { closed = { resolve, reject }; });
  const out = new WritableStream({
    write(letter) {
      letters.push(letter);
      $("mirrored").textContent = letters.join("");
    },
    close() { closed.resolve(); },
    abort(reason) { closed.reject(reason); },
  });
  await api.mirror(word, out);
  await done;
  return letters.join(",");
}

$("spell").addEventListener("submit", (event) => {
  event.preventDefault();
  spell($("word").value).catch((e) => { $("letters").textContent = `error: ${e.message}`; });
  shout($("word").value).catch((e) => { $("shouted").textContent = `error: ${e.message}`; });
  mirror($("word").value).catch((e) => { $("mirrored").textContent = `error: ${e.message}`; });
});

$("greet").addEventListener("submit", (event) => {
  event.preventDefault();
  greet($("name").value).catch((e) => { $("greeting").textContent = `error: ${e.message}`; });
});

// `?test`: greets, waits for three ticks, and reports in #status (and in
// `window.farcallTest`, which the headless browser test awaits).
if (new URLSearchParams(location.search).has("test")) {
  window.farcallTest = (async () => {
    try {
      const greeting = await greet("Chromium");
      const spelled = await spell("Rust");
      const shouted = await shout("streams both ways");
      const mirrored = await mirror("Rust");
      await new Promise((resolve) => {
        onCount = () => { if (counted >= 3) resolve(); };
        onCount();
      });
      const result = `PASS greeting=${greeting} spelled=${spelled} shouted=${shouted} mirrored=${mirrored} count=${$("count").textContent}`;
      $("status").textContent = result;
      return result;
    } catch (e) {
      const result = `FAIL ${e && e.message}`;
      $("status").textContent = result;
      return result;
    }
  })();
}
