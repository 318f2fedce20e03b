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
      await new Promise((resolve) => {
        onCount = () => { if (counted >= 3) resolve(); };
        onCount();
      });
      const result = `PASS greeting=${greeting} count=${$("count").textContent}`;
      $("status").textContent = result;
      return result;
    } catch (e) {
      const result = `FAIL ${e && e.message}`;
      $("status").textContent = result;
      return result;
    }
  })();
}
