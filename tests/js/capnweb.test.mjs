// Stock `capnweb` clients (npm, pinned in package.json) calling the farcall server of
// tests/bin/capnweb_server.rs over WebSocket and HTTP batch.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { newWebSocketRpcSession, newHttpBatchRpcSession, RpcTarget, RpcStub } from "capnweb";

// Where cargo put the test server: `CARGO_TARGET_DIR` (absolute) when set, else the
// repository's `target/`; `FARCALL_CAPNWEB_SERVER` names the binary outright.
const targetDir =
  process.env.CARGO_TARGET_DIR ?? fileURLToPath(new URL("../../target", import.meta.url));
const serverPath =
  process.env.FARCALL_CAPNWEB_SERVER ??
  `${targetDir}/debug/farcall-capnweb-test-server`;

let server;
let port;

before(async () => {
  server = spawn(serverPath, [], { stdio: ["pipe", "pipe", "inherit"] });
  port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("the server printed no port within 20 s")), 20000);
    let out = "";
    server.stdout.on("data", (chunk) => {
      out += chunk;
      const line = out.split("\n")[0];
      if (out.includes("\n")) {
        clearTimeout(timer);
        resolve(Number(line));
      }
    });
    server.on("error", (e) => { clearTimeout(timer); reject(e); });
    server.on("exit", (code) => { clearTimeout(timer); reject(new Error(`the server exited with ${code}`)); });
  });
});

after(() => {
  // The server stops when its stdin closes; kill it in case it does not.
  server.stdin.end();
  server.kill();
});

const ws = () => newWebSocketRpcSession(`ws://127.0.0.1:${port}/rpc`);
const batch = () => newHttpBatchRpcSession(`http://127.0.0.1:${port}/rpc`);
const ZERO = { questions: 0, answers: 0, exports: 0, imports: 0, streams: 0 };

// Reads `api.stats()` until the tables are empty (what a release sets off may still
// be on its way), at most 50 round trips; returns the last reading.
async function settledStats(api) {
  let stats;
  for (let i = 0; i < 50; i++) {
    stats = await api.stats();
    if (Object.values(stats).every((n) => n === 0)) break;
  }
  return stats;
}
const opts = { timeout: 20000 };

test("values cross over WebSocket", opts, async () => {
  const api = ws();
  try {
    assert.equal(await api.add(1.5, 2), 3.5);
    assert.equal(await api.greet("JS"), "Hello, JS!");
    assert.deepEqual(await api.mirror({ x: 1, y: 2, label: "a" }), { x: -1, y: -2, label: "A" });
    assert.deepEqual(await api.mirror({ x: 1, y: 2 }), { x: -1, y: -2, label: null });
    assert.equal(await api.sum([1, 2, 3]), 6);
    assert.deepEqual(await api.reverse(["a", "b", "c"]), ["c", "b", "a"]);
    assert.equal(await api.double(4), 8);
    assert.equal(await api.double(null), null);
    assert.equal(await api.double(), null);
    const flipped = await api.flip(new Uint8Array([1, 2, 255]));
    assert.ok(flipped instanceof Uint8Array);
    assert.deepEqual([...flipped], [255, 2, 1]);
    assert.equal(await api.big(), 18446744073709551615n);
    assert.deepEqual(await api.stats(), ZERO);
  } finally {
    api[Symbol.dispose]();
  }
});

test("values cross over HTTP batch", opts, async () => {
  const api = batch();
  const [sum, greeting, point, words, bytes, none] = await Promise.all([
    api.add(2, 3),
    api.greet("batch"),
    api.mirror({ x: 3, y: 4, label: "b" }),
    api.reverse(["x", "y"]),
    api.flip(new Uint8Array([7, 8])),
    api.double(null),
  ]);
  assert.equal(sum, 5);
  assert.equal(greeting, "Hello, batch!");
  assert.deepEqual(point, { x: -3, y: -4, label: "B" });
  assert.deepEqual(words, ["y", "x"]);
  assert.deepEqual([...bytes], [8, 7]);
  assert.equal(none, null);
});

test("application errors and RPC errors reject with their text", opts, async () => {
  const api = ws();
  try {
    await assert.rejects(async () => await api.div(1, 0), (e) => e instanceof Error && e.message === "division by zero");
    await assert.rejects(async () => await api.explode(), (e) => e instanceof Error && /panicked: kaboom/.test(e.message));
    await assert.rejects(async () => await api.noSuchMethod(), (e) => e instanceof Error && /not found/.test(e.message));
    await assert.rejects(async () => await api.sum("not a list"), (e) => e instanceof Error && /sum/.test(e.message));
    assert.equal(await api.div(7, 2), 3);
    assert.deepEqual(await api.stats(), ZERO);
  } finally {
    api[Symbol.dispose]();
  }
  const viaBatch = batch();
  await assert.rejects(async () => await viaBatch.div(1, 0), (e) => e.message === "division by zero");
});

test("functions passed to Rust are called, kept and released", opts, async () => {
  const api = ws();
  try {
    assert.equal(await api.call_twice((x) => x * 10), 30);
    const got = [];
    assert.equal(await api.subscribe((text) => { got.push(text); }), 1);
    assert.equal(await api.publish("hello"), 1);
    assert.equal(await api.publish("again"), 1);
    assert.deepEqual(got, ["hello", "again"]);
    assert.equal(await api.unsubscribe_all(), 1);
    // An object implemented in JavaScript, where Rust expects a `CounterClient`.
    class Plus100 extends RpcTarget {
      increment(by) { return by + 100; }
    }
    assert.equal(await api.use_counter(new Plus100()), 110);
    assert.deepEqual(await api.stats(), ZERO);
  } finally {
    api[Symbol.dispose]();
  }
});

test("returned stubs are called and released", opts, async () => {
  const api = ws();
  try {
    const counter = await api.counter(5);
    assert.equal(await counter.increment(2), 7);
    assert.equal(await counter.value(), 7);
    const child = await counter.child();
    assert.equal(await child.value(), 8);
    assert.equal((await api.stats()).exports, 2);
    child[Symbol.dispose]();
    counter[Symbol.dispose]();
    assert.deepEqual(await api.stats(), ZERO);
  } finally {
    api[Symbol.dispose]();
  }
});

test("a pipelined chain costs one round trip", opts, async () => {
  // Over HTTP batch a round trip is a request: the whole chain must go in one.
  const before = await batch().requests();
  const api = batch();
  assert.equal(await api.counter(1).child().child().value(), 3);
  const after = await batch().requests();
  assert.equal(after - before, 2, "the chain's request and this one");

  // Over WebSocket too, and the promises given back leave nothing behind.
  const live = ws();
  try {
    const c1 = live.counter(10);
    const c2 = c1.child();
    const c3 = c2.child();
    assert.equal(await c3.increment(5), 17);
    for (const p of [c3, c2, c1]) p[Symbol.dispose]();
    assert.deepEqual(await live.stats(), ZERO);
  } finally {
    live[Symbol.dispose]();
  }
});

test("streams cross as ReadableStreams both ways", opts, async () => {
  const api = ws();
  try {
    // A Rust `Stream<u64>` result is a ReadableStream here.
    const numbers = await api.count(1000);
    assert.ok(numbers instanceof ReadableStream);
    const got = [];
    for await (const n of numbers) got.push(n);
    assert.deepEqual(got, Array.from({ length: 1000 }, (_, i) => i));

    // A ReadableStream argument is a `Stream<i64>` there.
    const source = new ReadableStream({
      start(c) {
        for (let i = 1; i <= 100; i++) c.enqueue(i);
        c.close();
      },
    });
    assert.equal(await api.total(source), 5050);

    // Bytes both ways: `ByteStream` is a ReadableStream of Uint8Array chunks.
    let len = 0;
    let wrong = 0;
    for await (const chunk of await api.download(200_000)) {
      assert.ok(chunk instanceof Uint8Array);
      for (const b of chunk) if (b !== len++ % 251) wrong++;
    }
    assert.equal(len, 200_000);
    assert.equal(wrong, 0);
    let sent = 0;
    let sum = 0;
    const upload = new ReadableStream({
      pull(c) {
        if (sent >= 300 * 1024) return c.close();
        const chunk = new Uint8Array(10 * 1024).map((_, i) => (sent + i) % 256);
        for (const b of chunk) sum += b;
        sent += chunk.length;
        c.enqueue(chunk);
      },
    });
    assert.deepEqual(await api.upload(upload), [300 * 1024, sum % 2 ** 32]);

    // A page that stops reading stops the Rust producer.
    const endless = (await api.count(1e9)).getReader();
    for (let k = 0; k < 3; k++) assert.equal((await endless.read()).value, k);
    await endless.cancel();

    // A JavaScript producer that fails fails the Rust reader, with its error.
    const failing = new ReadableStream({
      start(c) {
        c.enqueue(1);
        c.error(new Error("disk on fire"));
      },
    });
    await assert.rejects(async () => await api.total(failing), /disk on fire/);

    assert.deepEqual(await settledStats(api), ZERO);
  } finally {
    api[Symbol.dispose]();
  }
});

// Reads `read()` until it gives the same number 5 times running (at most 100
// round trips): how far something the session drives got once it stopped.
async function whenSteady(read) {
  let last = await read();
  let same = 0;
  for (let i = 0; i < 100 && same < 5; i++) {
    const now = await read();
    same = now === last ? same + 1 : 0;
    last = now;
  }
  return last;
}

test("a slow reader holds a Rust producer to a window", opts, async () => {
  const api = ws();
  try {
    const reader = (await api.ticks()).getReader();
    for (let k = 0; k < 3; k++) assert.equal((await reader.read()).value, k);
    const produced = await whenSteady(() => api.produced());
    // The window (64 writes), a write or two held by the pipe, one item the pump
    // took and could not send yet.
    assert.ok(produced >= 64 && produced <= 3 + 64 + 3, `${produced} made for 3 read`);
    await reader.cancel();
    assert.deepEqual(await settledStats(api), ZERO);
  } finally {
    api[Symbol.dispose]();
  }
});

test("a fast writer is acknowledged only as a slow Rust reader reads", opts, async () => {
  const api = ws();
  try {
    const total = 20_000;
    let pulled = 0;
    const source = new ReadableStream({
      pull(c) {
        if (pulled < total) c.enqueue(pulled++);
        else c.close();
      },
    }, { highWaterMark: 0 });
    await api.hold(source);
    // Unread, it takes what capnweb's own window lets out (256 KiB of writes,
    // some thousands), then waits for acknowledgements.
    const written = await whenSteady(async () => { await api.add(0, 0); return pulled; });
    assert.ok(written < total, `${written} of ${total} written before any was read`);
    assert.equal(await api.drain(), total);
    assert.equal(pulled, total);
    assert.deepEqual(await settledStats(api), ZERO);
  } finally {
    api[Symbol.dispose]();
  }
});

test("a stream in a result is read whole or through a property path", opts, async () => {
  const api = ws();
  try {
    const pair = await api.pair(3);
    assert.equal(pair.name, "pair");
    const got = [];
    for await (const n of pair.numbers) got.push(n);
    assert.deepEqual(got, [0, 1, 2]);

    const kept = api.pair(5);
    const numbers = [];
    for await (const n of await kept.numbers) numbers.push(n);
    assert.deepEqual(numbers, [0, 1, 2, 3, 4]);
    // A stream is read once: read again, it fails saying why.
    const again = (await kept.numbers).getReader();
    await assert.rejects(async () => await again.read(), /already started/);
    kept[Symbol.dispose]();
    assert.deepEqual(await settledStats(api), ZERO);
  } finally {
    api[Symbol.dispose]();
  }
});

test("cancelling a stream whose result is kept leaves the session working", opts, async () => {
  const api = ws();
  try {
    const kept = api.pair(1e9);
    const reader = (await kept.numbers).getReader();
    // Past a grant of credit, so writes may still be on their way when it cancels.
    for (let k = 0; k < 40; k++) assert.equal((await reader.read()).value, k);
    await reader.cancel();
    for (let i = 0; i < 10; i++) assert.equal(await api.add(i, 1), i + 1);
    kept[Symbol.dispose]();
    assert.deepEqual(await settledStats(api), ZERO);
  } finally {
    api[Symbol.dispose]();
  }
});

test("a Rust reader that stops early cancels the page's stream", opts, async () => {
  const api = ws();
  try {
    let n = 0;
    let cancelled;
    const source = new ReadableStream({
      pull(c) { c.enqueue(n++); },
      cancel(reason) { cancelled = reason; },
    }, { highWaterMark: 0 });
    assert.equal(await api.first(source), 0);
    for (let i = 0; i < 50 && cancelled === undefined; i++) await api.add(0, 0);
    assert.match(String(cancelled), /reader is gone/);
    assert.deepEqual(await settledStats(api), ZERO);
  } finally {
    api[Symbol.dispose]();
  }
});

test("a stream closed before the Rust reader starts is read whole", opts, async () => {
  const api = ws();
  try {
    const source = new ReadableStream({
      start(c) {
        for (let i = 0; i < 5; i++) c.enqueue(i);
        c.close();
      },
    });
    await api.hold(source);
    assert.equal(await api.drain(), 5);
    assert.deepEqual(await settledStats(api), ZERO);
  } finally {
    api[Symbol.dispose]();
  }
});

test("a chunk of megabytes crosses whole", opts, async () => {
  const api = ws();
  try {
    const big = new Uint8Array(8 << 20).map((_, i) => i % 256);
    let sum = 0;
    for (const b of big) sum += b;
    const upload = new ReadableStream({
      start(c) {
        c.enqueue(new Uint8Array([1]));
        c.enqueue(big);
        c.close();
      },
    });
    assert.deepEqual(await api.upload(upload), [(8 << 20) + 1, (sum + 1) % 2 ** 32]);
    assert.deepEqual(await settledStats(api), ZERO);
  } finally {
    api[Symbol.dispose]();
  }
});

test("properties of results are read and called through", opts, async () => {
  const api = ws();
  try {
    const team = api.team();
    assert.equal(await team.name, "core");
    assert.deepEqual(await team.stats, { x: 1, y: 2, label: "stats" });
    assert.equal(await team.stats.label, "stats");
    assert.equal(await team.nope, undefined);
    await assert.rejects(async () => await team.nope.deeper, (e) => e instanceof TypeError && /reading 'deeper'/.test(e.message));
    await assert.rejects(async () => await team.name.toUpperCase(), (e) => e instanceof TypeError && /not a function/.test(e.message));
    // Calls through a path go to the object it reaches.
    assert.equal(await team.lead.increment(5), 6);
    const child = team.members[1].child();
    assert.equal(await child.value(), 4);
    // A read of an object is a stub, called and disposed like any other.
    const lead = await team.lead;
    assert.equal(await lead.value(), 6);
    const members = await team.members;
    assert.equal(await members[0].value(), 2);
    for (const stub of [lead, ...members]) stub[Symbol.dispose]();
    // Until the team itself is disposed, its objects stay.
    assert.equal((await api.stats()).exports, 4, "the lead, the members and a child");
    child[Symbol.dispose]();
    team[Symbol.dispose]();
    assert.deepEqual(await api.stats(), ZERO);
  } finally {
    api[Symbol.dispose]();
  }
});

test("property paths on results cost one round trip", opts, async () => {
  // Over HTTP batch a round trip is a request: reads and calls through paths, all
  // pipelined on a team not yet returned, go in one.
  const before = await batch().requests();
  const api = batch();
  const team = api.team();
  const [name, label, incremented, deep] = await Promise.all([
    team.name,
    team.stats.label,
    team.lead.increment(5),
    team.members[0].child().child().value(),
  ]);
  assert.deepEqual([name, label, incremented, deep], ["core", "stats", 6, 4]);
  const after = await batch().requests();
  assert.equal(after - before, 2, "the chain's request and this one");

  // Over WebSocket too, before the team returns, leaving nothing behind.
  const live = ws();
  try {
    const team = live.team();
    const child = team.lead.child();
    const [value, label] = await Promise.all([child.increment(10), team.stats.label]);
    assert.deepEqual([value, label], [12, "stats"]);
    child[Symbol.dispose]();
    team[Symbol.dispose]();
    assert.deepEqual(await live.stats(), ZERO);
  } finally {
    live[Symbol.dispose]();
  }
});

test("promises passed as arguments are awaited by the server", opts, async () => {
  // The client passes a promise as a value when it holds an `RpcPromise` that is not
  // the server's: a call on a local object (as here) or on another session. It
  // exports it and settles it by itself; the server runs the call once it has.
  class Later extends RpcTarget {
    now(value) { return value; }
    after(ms, value) { return new Promise((resolve) => setTimeout(() => resolve(value), ms)); }
    fail(message) { throw new Error(message); }
    counter() {
      return new (class extends RpcTarget { increment(by) { return by + 100; } })();
    }
  }
  const local = new RpcStub(new Later());
  const api = ws();
  try {
    assert.equal(await api.add(local.now(1), local.after(50, 2)), 3);
    await assert.rejects(
      async () => await api.add(local.after(20, 1), local.fail("no number")),
      (e) => e instanceof Error && e.message === "no number",
    );
    // An object arriving through a promise is a `CounterClient` there.
    assert.equal(await api.use_counter(local.counter()), 110);
    // capnweb 0.12 cannot send a native `Promise` at all: it throws before sending.
    await assert.rejects(async () => await api.add(Promise.resolve(1), 2), /Cannot serialize value/);
    assert.deepEqual(await settledStats(api), ZERO);
  } finally {
    api[Symbol.dispose]();
    local[Symbol.dispose]();
  }
});

test("a promise resolving to one of the server's own objects or answers", opts, async () => {
  // A local object hands back what it is given, later: the promise the client
  // passes resolves to a stub of the server's, or to a call on it still running.
  // (The argument is disposed once `later` returns: it keeps a copy to hand back.)
  class Relay extends RpcTarget {
    later(x) {
      const kept = x.dup();
      return new Promise((resolve) => setTimeout(() => resolve(kept), 20));
    }
  }
  const local = new RpcStub(new Relay());
  const api = ws();
  try {
    const counter = await api.counter(7);
    assert.equal(await api.use_counter(local.later(counter)), 17);
    assert.equal(await counter.value(), 17, "the server's own counter, not a copy");
    const team = api.team();
    assert.equal(await api.use_counter(local.later(team.lead)), 11);
    const running = api.counter(2);
    assert.equal(await api.use_counter(local.later(running)), 12);
    for (const stub of [counter, team, running]) stub[Symbol.dispose]();
    // The server releases each promise once settled; the client (capnweb 0.12)
    // still never lets go of the stub its promise resolved to, one per call. (A
    // capnweb server cannot take such a resolution at all: "Tried to resolve a
    // non-promise stub".)
    const stats = await settledStats(api);
    assert.deepEqual(stats, { ...ZERO, exports: 3 });
  } finally {
    api[Symbol.dispose]();
    local[Symbol.dispose]();
  }
});

test("a WritableStream passed in is written by Rust, then closed", opts, async () => {
  const api = ws();
  try {
    const got = [];
    let closed;
    const whenClosed = new Promise((resolve) => { closed = resolve; });
    const out = new WritableStream({
      async write(line) {
        // A slow sink: the Rust writer waits for it.
        await new Promise((r) => setTimeout(r, got.length % 7 === 0 ? 2 : 0));
        got.push(line);
      },
      close() { closed(); },
    });
    assert.equal(await api.fill(30, out), 30);
    await whenClosed;
    assert.deepEqual(got, Array.from({ length: 30 }, (_, i) => `line ${i}`));
    assert.deepEqual(await settledStats(api), ZERO);
  } finally {
    api[Symbol.dispose]();
  }
});

test("a WritableStream that fails stops the Rust writer", opts, async () => {
  const api = ws();
  try {
    let writes = 0;
    const out = new WritableStream({
      write() {
        writes += 1;
        if (writes === 3) throw new Error("quota exceeded");
      },
    });
    const taken = await api.fill(100_000, out);
    assert.ok(taken < 100_000, `the writer went on after its sink failed (${taken})`);
    assert.deepEqual(await settledStats(api), ZERO);
  } finally {
    api[Symbol.dispose]();
  }
});

test("a returned StreamSender is a WritableStream to write, close or abort", opts, async () => {
  const api = ws();
  try {
    const inbox = await api.inbox();
    assert.ok(inbox instanceof WritableStream);
    const writer = inbox.getWriter();
    for (const line of ["a", "b", "c"]) await writer.write(line);
    await writer.close();
    assert.deepEqual(await api.inbox_read(), ["a", "b", "c"]);

    const second = (await api.inbox()).getWriter();
    await second.write("x");
    await second.abort(new Error("changed my mind"));
    await assert.rejects(async () => await api.inbox_read(), /changed my mind/);
    assert.deepEqual(await settledStats(api), ZERO);
  } finally {
    api[Symbol.dispose]();
  }
});

test("bytes cross WritableStreams of Uint8Arrays both ways", opts, async () => {
  const api = ws();
  try {
    const chunks = [];
    let closed;
    const whenClosed = new Promise((resolve) => { closed = resolve; });
    const out = new WritableStream({ write(chunk) { chunks.push(chunk); }, close() { closed(); } });
    // The call returns once its writes are handed over; the close follows them.
    await api.save(100_000, out);
    await whenClosed;
    assert.ok(chunks.every((c) => c instanceof Uint8Array));
    const all = Buffer.concat(chunks);
    assert.equal(all.length, 100_000);
    assert.ok(all.every((b, i) => b === i % 251));

    const writer = (await api.bytes_inbox()).getWriter();
    for (let k = 0; k < 10; k++) await writer.write(new Uint8Array(1000).fill(k));
    await writer.close();
    assert.deepEqual(await api.bytes_read(), [10_000, 45_000]);
    assert.deepEqual(await settledStats(api), ZERO);
  } finally {
    api[Symbol.dispose]();
  }
});

test("a gateway relays streams between the page and a farcall backend", opts, async () => {
  const api = ws();
  try {
    const got = [];
    for await (const n of await api.relayed(500)) got.push(n);
    assert.deepEqual(got, Array.from({ length: 500 }, (_, i) => i));
    let i = 0;
    const numbers = new ReadableStream({
      pull(c) {
        if (i < 100) c.enqueue(++i);
        else c.close();
      },
    });
    assert.equal(await api.relayed_total(numbers), 5050);
    assert.deepEqual(await settledStats(api), ZERO);
  } finally {
    api[Symbol.dispose]();
  }
});

test("streams over HTTP batch are refused with the reason", opts, async () => {
  let written = 0;
  const out = new WritableStream({ write() { written += 1; } });
  await assert.rejects(async () => await batch().fill(3, out), /HTTP batch/);
  assert.equal(written, 0);
  const numbers = await batch().count(3);
  assert.ok(numbers instanceof Error, `got ${numbers}`);
  assert.match(numbers.message, /HTTP batch/);
  const api = ws();
  try {
    assert.deepEqual(await settledStats(api), ZERO);
  } finally {
    api[Symbol.dispose]();
  }
});

test("malformed input aborts that session only", opts, async () => {
  const socket = new WebSocket(`ws://127.0.0.1:${port}/rpc`);
  const abort = await new Promise((resolve, reject) => {
    socket.onopen = () => socket.send("this is not json");
    socket.onmessage = (event) => resolve(JSON.parse(event.data));
    socket.onerror = () => reject(new Error("websocket error"));
  });
  assert.equal(abort[0], "abort");
  assert.match(abort[1][2], /malformed message/);
  socket.close();

  const response = await fetch(`http://127.0.0.1:${port}/rpc`, { method: "POST", body: '["push", 42]\n["frob"]' });
  const body = await response.text();
  assert.match(body, /^\["abort",\["error","Error",".*unknown message type/);

  const api = ws();
  try {
    assert.equal(await api.add(1, 1), 2);
  } finally {
    api[Symbol.dispose]();
  }
});
