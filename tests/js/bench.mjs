// Benchmark: the same stock `capnweb` client in Node calling `add(a, b)` on
// (a) a capnweb server in Node (server.mjs) and (b) the farcall server
// (tests/bin/capnweb_server.rs, release build), over loopback WebSocket: sequential
// calls per second, and calls per second with 64 in flight, with the CPU time the
// server and the client spent per call (from /proc, on Linux); then streams: items
// per second read from the server, and MB/s of bytes read from it and written to it. Each server runs in a
// process of its own; rounds alternate between them and the best round counts.
//
//   cargo build --release --bin farcall-capnweb-test-server
//   cd tests/js && npm run bench            # or: npm run bench -- --quick
//
// `--clients N` spreads the 64 calls in flight over N client threads, for machines
// with the cores to make the server, not one client thread, the limit.
//
// FARCALL_CAPNWEB_SERVER overrides the farcall server's path. Prints a table, then
// one line of JSON.
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { existsSync, readFileSync } from "node:fs";
import { Worker, isMainThread, parentPort, workerData } from "node:worker_threads";
import { newWebSocketRpcSession } from "capnweb";

// `width` loops on one session, each awaiting its call before the next, until `end`
// (a `performance.timeOrigin`-based time); returns how many calls completed.
async function callLoops(api, width, end) {
  let calls = 0;
  const loop = async () => {
    let i = 0;
    while (performance.timeOrigin + performance.now() < end) {
      const r = await api.add(i, 1);
      if (r !== i + 1) throw new Error(`add(${i}, 1) returned ${r}`);
      i++;
      calls++;
    }
  };
  await Promise.all(Array.from({ length: width }, loop));
  return calls;
}

// A client thread of `--clients N`: its own session, warmed up, then told when to
// stop.
if (!isMainThread) {
  const { url, width } = workerData;
  const api = newWebSocketRpcSession(url);
  for (let i = 0; i < 200; i++) await api.add(i, 1);
  parentPort.postMessage("ready");
  const end = await new Promise((resolve) => parentPort.once("message", resolve));
  parentPort.postMessage(await callLoops(api, width, end));
  api[Symbol.dispose]();
  process.exit(0);
}

const capnwebVersion = JSON.parse(
  readFileSync(new URL("./node_modules/capnweb/package.json", import.meta.url), "utf8"),
).version;

const quick = process.argv.includes("--quick");
// `--clients N`: the in-flight calls are spread over N sessions, each in a thread of
// its own, so one client thread is not what limits a fast server (given the cores).
const clientsAt = process.argv.indexOf("--clients");
const clients = clientsAt < 0 ? 1 : Number(process.argv[clientsAt + 1]);
if (!(Number.isInteger(clients) && clients >= 1)) {
  console.error("--clients takes a positive number");
  process.exit(2);
}
const seconds = quick ? 0.5 : 2;
const rounds = quick ? 1 : 3;
const inFlight = 64;

// Where cargo put the release build: `CARGO_TARGET_DIR` (absolute) when set, else
// the repository's `target/`.
const targetDir =
  process.env.CARGO_TARGET_DIR ?? fileURLToPath(new URL("../../target", import.meta.url));
const farcallPath =
  process.env.FARCALL_CAPNWEB_SERVER ?? `${targetDir}/release/farcall-capnweb-test-server`;
const nodeServerPath = fileURLToPath(new URL("./server.mjs", import.meta.url));

if (!existsSync(farcallPath)) {
  console.error(
    `no farcall server at ${farcallPath}: run \`cargo build --release --bin farcall-capnweb-test-server\``,
  );
  process.exit(2);
}

// Starts a server process that prints its port on its first line.
function start(command, args) {
  const child = spawn(command, args, { stdio: ["pipe", "pipe", "inherit"] });
  const port = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${command} printed no port within 20 s`)), 20000);
    let out = "";
    child.stdout.on("data", (chunk) => {
      out += chunk;
      if (out.includes("\n")) {
        clearTimeout(timer);
        resolve(Number(out.split("\n")[0]));
      }
    });
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`${command} exited with ${code}`));
    });
  });
  return { child, port };
}

// CPU seconds a process has used (user + system), where /proc tells (Linux).
function cpuSeconds(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // utime and stime, fields 14 and 15 of stat(5), in clock ticks (100 a second).
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return NaN;
  }
}

// Calls per second with `width` calls in flight (one session; or `threads` sessions
// in threads of their own, sharing them out), for `duration` seconds; and the CPU
// time the server and this client process spent per call.
async function measure(url, pid, width, duration = seconds, threads = 1) {
  let workers = [];
  let api;
  try {
    if (threads > 1) {
      workers = Array.from({ length: threads }, (_, k) => {
        const share = Math.floor(width / threads) + (k < width % threads ? 1 : 0);
        return new Worker(new URL(import.meta.url), { workerData: { url, width: Math.max(1, share) } });
      });
      await Promise.all(workers.map((w) => once(w, "message")));
    } else {
      api = newWebSocketRpcSession(url);
      // Warm up (JIT, connection, allocator).
      for (let i = 0; i < 200; i++) await api.add(i, 1);
    }
    const started = performance.now();
    const serverCpu = cpuSeconds(pid);
    const clientCpu = process.cpuUsage();
    const end = performance.timeOrigin + started + duration * 1000;
    let calls;
    if (threads > 1) {
      const counts = workers.map((w) => once(w, "message"));
      for (const w of workers) w.postMessage(end);
      calls = (await Promise.all(counts)).reduce((a, b) => a + b, 0);
    } else {
      calls = await callLoops(api, width, end);
    }
    const elapsed = (performance.now() - started) / 1000;
    const client = process.cpuUsage(clientCpu);
    return {
      rate: calls / elapsed,
      serverUs: ((cpuSeconds(pid) - serverCpu) * 1e6) / calls,
      clientUs: (client.user + client.system) / calls,
    };
  } finally {
    api?.[Symbol.dispose]();
    await Promise.all(workers.map((w) => w.terminate()));
  }
}

// The next message of a worker (rejects if it fails first).
function once(worker, event) {
  return new Promise((resolve, reject) => {
    worker.once(event, resolve);
    worker.once("error", reject);
  });
}

// The farcall server runs twice: on one thread (a current-thread runtime, as Node
// has one event loop) and on tokio's default runtime (a worker thread per core).
const servers = {
  node: { name: "Node capnweb", ...start(process.execPath, [nodeServerPath]), path: "/" },
  farcall1: { name: "farcall, 1 thread", ...start(farcallPath, ["--threads", "1"]), path: "/rpc" },
  farcall: { name: "farcall, default runtime", ...start(farcallPath, []), path: "/rpc" },
};
for (const server of Object.values(servers)) {
  server.url = `ws://127.0.0.1:${await server.port}${server.path}`;
}

const modes = { sequential: 1, [`${inFlight} in flight`]: inFlight };
const best = {};
const streamBest = {};

// Items per second of a stream of numbers read from the server (`count`), and MB/s
// of bytes read from it (`download`) and written to it (`upload`), on one session.
async function measureStreams(url, pid) {
  const items = quick ? 20_000 : 200_000;
  const bytes = (quick ? 8 : 64) << 20;
  const api = newWebSocketRpcSession(url);
  try {
    // The rate of `units` done by `run`, and the server's CPU µs per unit.
    const timed = async (units, run) => {
      const t = performance.now();
      const cpu = cpuSeconds(pid);
      await run();
      const seconds = (performance.now() - t) / 1000;
      return { rate: units / seconds, serverUs: ((cpuSeconds(pid) - cpu) * 1e6) / units };
    };
    const itemRate = await timed(items, async () => {
      let n = 0;
      for await (const _ of await api.count(items)) n++;
      if (n !== items) throw new Error(`count(${items}) gave ${n} items`);
    });
    const downRate = await timed(bytes / 1e6, async () => {
      let got = 0;
      for await (const chunk of await api.download(bytes)) got += chunk.length;
      if (got !== bytes) throw new Error(`download(${bytes}) gave ${got} bytes`);
    });

    const chunk = new Uint8Array(64 << 10).fill(7);
    let sent = 0;
    const source = new ReadableStream({
      pull(c) {
        if (sent >= bytes) return c.close();
        sent += chunk.length;
        c.enqueue(chunk);
      },
    });
    const upRate = await timed(bytes / 1e6, () => api.upload(source));
    return { "stream items/s": itemRate, "download MB/s": downRate, "upload MB/s": upRate };
  } finally {
    api[Symbol.dispose]();
  }
}
try {
  // Warm every server up (the JIT of Node's, the allocators of all) before measuring.
  for (const server of Object.values(servers)) {
    await measure(server.url, server.child.pid, inFlight, 0.5);
    await measure(server.url, server.child.pid, 1, 0.25);
  }
  for (const [mode, width] of Object.entries(modes)) {
    best[mode] = {};
    for (let round = 0; round < rounds; round++) {
      for (const [key, server] of Object.entries(servers)) {
        const m = await measure(server.url, server.child.pid, width, seconds, width > 1 ? clients : 1);
        if (!(best[mode][key]?.rate >= m.rate)) best[mode][key] = m;
      }
    }
  }
  // Streams: items and bytes from the server, bytes to it, on the Node server and
  // farcall's default runtime; the best of the rounds.
  for (const key of ["node", "farcall"]) {
    const url = servers[key].url;
    for (let round = 0; round < rounds; round++) {
      const m = await measureStreams(url, servers[key].child.pid);
      for (const [what, r] of Object.entries(m)) {
        streamBest[what] ??= {};
        if (!(streamBest[what][key]?.rate >= r.rate)) streamBest[what][key] = r;
      }
    }
  }
} finally {
  for (const { child } of Object.values(servers)) {
    child.stdin.end();
    child.kill();
  }
}

const fmt = (n) => Math.round(n).toLocaleString("en-US");
const us = (n) => (Number.isFinite(n) ? n.toFixed(1) : "?");
const round3 = (n) => (Number.isFinite(n) ? Number(n.toFixed(3)) : null);
console.log(
  `capnweb ${capnwebVersion} client (Node ${process.version}) calling add() over loopback ` +
    `WebSocket, best of ${rounds} round(s) of ${seconds} s${quick ? " (--quick)" : ""}` +
    (clients > 1 ? `, in-flight calls over ${clients} client threads` : ""),
);
console.log(
  "| mode | server | calls/s | vs Node | server CPU µs/call | client CPU µs/call |",
);
console.log("|---|---|---:|---:|---:|---:|");
const results = [];
for (const [mode, byServer] of Object.entries(best)) {
  for (const [key, m] of Object.entries(byServer)) {
    const ratio = m.rate / byServer.node.rate;
    console.log(
      `| ${mode} | ${servers[key].name} | ${fmt(m.rate)} | ${ratio.toFixed(2)} ` +
        `| ${us(m.serverUs)} | ${us(m.clientUs)} |`,
    );
    results.push({
      mode,
      server: key,
      calls_per_sec: Math.round(m.rate),
      vs_node: round3(ratio),
      server_cpu_us_per_call: round3(m.serverUs),
      client_cpu_us_per_call: round3(m.clientUs),
    });
  }
}
console.log("");
console.log(
  "| streams | Node capnweb | farcall | vs Node | server CPU µs per item or MB, Node / farcall |",
);
console.log("|---|---:|---:|---:|---:|");
const streams = [];
for (const [what, { node, farcall }] of Object.entries(streamBest)) {
  const ratio = farcall.rate / node.rate;
  const shown = (n) => (what.includes("MB") ? n.toFixed(1) : fmt(n));
  console.log(
    `| ${what} | ${shown(node.rate)} | ${shown(farcall.rate)} | ${ratio.toFixed(2)} ` +
      `| ${us(node.serverUs)} / ${us(farcall.serverUs)} |`,
  );
  streams.push({
    what,
    node: round3(node.rate),
    farcall: round3(farcall.rate),
    vs_node: round3(ratio),
    node_server_cpu_us: round3(node.serverUs),
    farcall_server_cpu_us: round3(farcall.serverUs),
  });
}
console.log(
  JSON.stringify({
    bench: "capnweb-server",
    streams,
    quick,
    seconds,
    rounds,
    in_flight: inFlight,
    clients,
    results,
  }),
);
