// The example of examples/browser/ in headless Chromium: its page calls the Rust
// server with capnweb over WebSocket (a callback the server calls, a pipelined
// chain) and reports in `window.farcallTest`, read here through the DevTools
// protocol. Run by `npm run browser-test` (its name keeps it out of `npm test`,
// since it needs Chromium).
//
// FARCALL_BROWSER_EXAMPLE: the built example (default target/debug/examples/browser);
// CHROMIUM: the browser (default: the first of chromium, chromium-browser,
// google-chrome on PATH).
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const targetDir =
  process.env.CARGO_TARGET_DIR ?? fileURLToPath(new URL("../../target", import.meta.url));
const examplePath =
  process.env.FARCALL_BROWSER_EXAMPLE ?? join(targetDir, "debug", "examples", "browser");

function findChromium() {
  if (process.env.CHROMIUM) return process.env.CHROMIUM;
  for (const name of ["chromium", "chromium-browser", "google-chrome"]) {
    if (spawnSync("which", [name]).status === 0) return name;
  }
  throw new Error("no Chromium found: install it (apt-get install chromium) or set CHROMIUM");
}

const children = [];
const profile = mkdtempSync(join(tmpdir(), "farcall-chromium-"));
after(() => {
  // Each child leads its own process group (Chromium's helpers included).
  for (const child of children) {
    try { process.kill(-child.pid, "SIGKILL"); } catch {}
  }
  rmSync(profile, { recursive: true, force: true });
});

// Starts `command` and resolves with the first match of `pattern` in its output
// (stdout or stderr), within `ms`.
function startAndWaitFor(command, args, pattern, ms) {
  const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"], detached: true });
  children.push(child);
  return new Promise((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error(`${command} printed no ${pattern} within ${ms} ms:\n${out}`)), ms);
    const read = (chunk) => {
      out += chunk;
      const match = out.match(pattern);
      if (match) { clearTimeout(timer); resolve(match); }
    };
    child.stdout.on("data", read);
    child.stderr.on("data", read);
    child.on("error", (e) => { clearTimeout(timer); reject(e); });
    child.on("exit", (code) => { clearTimeout(timer); reject(new Error(`${command} exited with ${code}:\n${out}`)); });
  });
}

// A minimal DevTools protocol client over the browser's WebSocket.
async function devtools(url) {
  const socket = new WebSocket(url);
  await new Promise((resolve, reject) => { socket.onopen = resolve; socket.onerror = () => reject(new Error("DevTools connection failed")); });
  let next = 0;
  const waiting = new Map();
  socket.onmessage = (event) => {
    const message = JSON.parse(event.data);
    const pending = waiting.get(message.id);
    if (!pending) return;
    waiting.delete(message.id);
    if (message.error) pending.reject(new Error(JSON.stringify(message.error)));
    else pending.resolve(message.result);
  };
  return {
    send(method, params = {}, sessionId) {
      const id = ++next;
      socket.send(JSON.stringify({ id, method, params, sessionId }));
      return new Promise((resolve, reject) => waiting.set(id, { resolve, reject }));
    },
    close() { socket.close(); },
  };
}

test("the example's page calls Rust from headless Chromium", { timeout: 60000 }, async () => {
  // Port 0: any free port; the example prints its URL.
  const [, pageUrl] = await startAndWaitFor(examplePath, ["0"], /serving (http:\S+)/, 20000);
  const [, browserUrl] = await startAndWaitFor(
    findChromium(),
    ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage",
      `--user-data-dir=${profile}`, "--remote-debugging-port=0", "about:blank"],
    /DevTools listening on (ws:\S+)/,
    30000,
  );
  const cdp = await devtools(browserUrl);
  try {
    const { targetId } = await cdp.send("Target.createTarget", { url: "about:blank" });
    const { sessionId } = await cdp.send("Target.attachToTarget", { targetId, flatten: true });
    await cdp.send("Page.navigate", { url: `${pageUrl}?test` }, sessionId);
    // Waits for the page's script to define its result, then for the result. An
    // evaluation that lands in the document being replaced is tried again.
    const expression = `(async () => {
      const deadline = Date.now() + 20000;
      while (!window.farcallTest) {
        if (Date.now() > deadline) return "FAIL the page's script did not start";
        await new Promise((r) => setTimeout(r, 50));
      }
      return await Promise.race([
        window.farcallTest,
        new Promise((r) => setTimeout(() => r("FAIL no result within 20 s: " + document.body.innerText), 20000)),
      ]);
    })()`;
    let evaluated;
    for (let attempt = 1; !evaluated; attempt++) {
      try {
        evaluated = await cdp.send("Runtime.evaluate", { expression, awaitPromise: true, returnByValue: true }, sessionId);
      } catch (e) {
        if (attempt >= 5 || !/context was destroyed/.test(e.message)) throw e;
      }
    }
    const { result, exceptionDetails } = evaluated;
    assert.equal(exceptionDetails, undefined, JSON.stringify(exceptionDetails));
    assert.match(result.value, /^PASS greeting=Hello, Chromium! \(from Rust\) spelled=R,u,s,t shouted=STREAMS BOTH WAYS mirrored=t,s,u,R count=([3-9]|\d\d+)$/);
  } finally {
    cdp.close();
  }
});
