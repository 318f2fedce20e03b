// A Cap'n Web server written in JavaScript with the stock `capnweb` package (pinned in
// package.json): the server that farcall's Rust client calls in tests/capnweb_node.rs,
// and the Node side of the benchmark (bench.mjs). Serves `Api` over WebSocket (the
// `ws` package) on 127.0.0.1, prints its port on stdout, and runs until stdin closes
// (so it dies with the process that started it).
//
// Method names are the Rust trait's (snake_case): Rust calls methods by name.
import { WebSocketServer, WebSocket } from "ws";
import { RpcTarget, RpcSession, RpcStub, WebSocketTransport } from "capnweb";

// capnweb's WebSocket transport reads `WebSocket.CONNECTING`; Node 20 has no global
// WebSocket without a flag, and `ws` sockets are compatible.
globalThis.WebSocket ??= WebSocket;

class Counter extends RpcTarget {
  constructor(n, tally) {
    super();
    this.n = n;
    this.tally = tally;
    tally.live += 1;
  }
  increment(by) {
    this.n += by;
    return this.n;
  }
  value() {
    return this.n;
  }
  child() {
    return new Counter(this.n + 1, this.tally);
  }
  // Called by capnweb when the peer releases its last reference.
  [Symbol.dispose]() {
    this.tally.live -= 1;
  }
}

// An object whose calls `promised` puts in its results: each is an `RpcPromise` of
// this side's, which capnweb sends as a promise and settles by itself.
class Later extends RpcTarget {
  constructor(tally) {
    super();
    this.tally = tally;
  }
  async after(n) {
    await new Promise((resolve) => setTimeout(resolve, 10));
    return n;
  }
  counter(n) {
    return new Counter(n, this.tally);
  }
  fail(message) {
    throw new RangeError(message);
  }
}

// One per session, so what `stats` reports is this session's alone.
class Api extends RpcTarget {
  constructor() {
    super();
    this.session = undefined;
    this.tally = { live: 0 };
    this.subscribers = [];
    this.produced = 0;
    this.kept = undefined;
  }
  add(a, b) {
    return a + b;
  }
  // Throw; the Rust side declares these with an error type.
  fail_typed(message) {
    throw new RangeError(message);
  }
  async fail_kind(kind) {
    throw new Error(kind);
  }
  greet(name) {
    return `Hello, ${name}!`;
  }
  mirror(p) {
    return { x: -p.x, y: -p.y, label: p.label == null ? null : p.label.toUpperCase() };
  }
  flip(data) {
    return data.slice().reverse();
  }
  fail(message) {
    throw new RangeError(message);
  }
  async call_twice(f) {
    return (await f(1)) + (await f(2));
  }
  // Keeps `f` (a stub passed as an argument is disposed after the call unless dup'ed).
  subscribe(f) {
    this.subscribers.push(f.dup());
    return this.subscribers.length;
  }
  async publish(text) {
    await Promise.all(this.subscribers.map((f) => f(text)));
    return this.subscribers.length;
  }
  unsubscribe_all() {
    const n = this.subscribers.length;
    for (const f of this.subscribers) f[Symbol.dispose]();
    this.subscribers = [];
    return n;
  }
  counter(start) {
    return new Counter(start, this.tally);
  }
  // A result holding promises: `n` after a moment (or, with `message`, one that
  // rejects with it) and a counter starting at `n`.
  promised(n, message) {
    const later = new RpcStub(new Later(this.tally));
    const result = {
      n: message == null ? later.after(n) : later.fail(message),
      counter: later.counter(n),
    };
    later[Symbol.dispose]();
    return result;
  }
  async use_counter(c) {
    return await c.increment(10);
  }
  // Calls `log(text)` on the client's own main object (what farcall's builder
  // offers as its root).
  async ask_client(text) {
    return await this.session.getRemoteMain().log(text);
  }
  // The numbers below `n`, as a ReadableStream.
  count(n) {
    let i = 0;
    return new ReadableStream({
      pull(c) {
        if (i < n) c.enqueue(i++);
        else c.close();
      },
    }, { highWaterMark: 0 });
  }
  // Writes the numbers below `n` into a WritableStream, then closes it.
  async fill(n, out) {
    const writer = out.getWriter();
    for (let i = 0; i < n; i++) await writer.write(i);
    await writer.close();
    return n;
  }
  // A WritableStream whose numbers `inbox_sum` adds up once it is closed.
  inbox() {
    let sum = 0;
    let done;
    this.inboxSum = new Promise((resolve, reject) => { done = { resolve, reject }; });
    return new WritableStream({
      write(n) { sum += n; },
      close() { done.resolve(sum); },
      abort(reason) { done.reject(reason instanceof Error ? reason : new Error(String(reason))); },
    });
  }
  inbox_sum() {
    return this.inboxSum;
  }
  // The sum of a ReadableStream of numbers.
  async total(numbers) {
    let total = 0;
    for await (const n of numbers) total += n;
    return total;
  }
  // `n` bytes (byte `i` is `i % 251`) in chunks of up to 16 KiB.
  download(n) {
    let sent = 0;
    return new ReadableStream({
      pull(c) {
        if (sent >= n) return c.close();
        const len = Math.min(16384, n - sent);
        c.enqueue(new Uint8Array(len).map((_, i) => (sent + i) % 251));
        sent += len;
      },
    });
  }
  // How many bytes a ReadableStream of Uint8Array carried.
  async upload(data) {
    let len = 0;
    for await (const chunk of data) len += chunk.length;
    return len;
  }
  // The numbers from 0 on, without end, made as they are read; `produced` says
  // how many were made.
  ticks() {
    this.produced = 0;
    return new ReadableStream({
      pull: (c) => { c.enqueue(this.produced++); },
    }, { highWaterMark: 0 });
  }
  produced_count() {
    return this.produced;
  }
  // Reads `n` numbers of the stream and keeps its reader, not reading further,
  // until `cancel_kept`.
  async take(numbers, n) {
    const reader = numbers.getReader();
    const got = [];
    for (let i = 0; i < n; i++) got.push((await reader.read()).value);
    this.kept = reader;
    return got;
  }
  async cancel_kept() {
    await this.kept?.cancel();
    this.kept = undefined;
  }
  // This session's tables (the main objects both ways included) and the counters
  // made here and not yet disposed.
  stats() {
    const { imports, exports } = this.session.getStats();
    return { imports, exports, live_counters: this.tally.live };
  }
}

const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 });
wss.on("connection", (ws) => {
  const api = new Api();
  api.session = new RpcSession(new WebSocketTransport(ws), api);
});
wss.on("listening", () => {
  process.stdout.write(`${wss.address().port}\n`);
});
wss.on("error", (e) => {
  console.error(e);
  process.exit(1);
});

process.stdin.on("data", () => {});
process.stdin.on("end", () => process.exit(0));
process.stdin.on("error", () => process.exit(0));
