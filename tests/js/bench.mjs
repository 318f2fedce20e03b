// Benchmark: the same stock `capnweb` client in Node calling `add(a, b)` on
// (a) a capnweb server in Node (server.mjs) and (b) the farcall server
// (tests/bin/capnweb_server.rs, release build), over loopback WebSocket: sequential
// calls per second, and calls per second with 64 in flight. Each server runs in a
// process of its own; rounds alternate between them and the best round counts.
//
//   cargo build --release --bin farcall-capnweb-test-server
//   cd tests/js && npm run bench            # or: npm run bench -- --quick
//
// FARCALL_CAPNWEB_SERVER overrides the farcall server's path. Prints a table, then
// one line of JSON.
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { existsSync, readFileSync } from "node:fs";
import { newWebSocketRpcSession } from "capnweb";

const quick = process.argv.includes("--quick");
const seconds = quick ? 0.5 : 2;
const rounds = quick ? 1 : 3;
const inFlight = 64;

const farcallPath =
  process.env.FARCALL_CAPNWEB_SERVER ??
  fileURLToPath(new URL("../../target/release/farcall-capnweb-test-server", import.meta.url));
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

// Calls per second of one session: `width` loops, each awaiting its call before the
// next, for `seconds`; and the CPU time the server and this client spent per call.
async function measure(url, pid, width) {
  const api = newWebSocketRpcSession(url);
  try {
    // Warm up (JIT, connection, allocator).
    for (let i = 0; i < 200; i++) await api.add(i, 1);
    let calls = 0;
    const end = performance.now() + seconds * 1000;
    const loop = async () => {
      let i = 0;
      while (performance.now() < end) {
        const r = await api.add(i, 1);
        if (r !== i + 1) throw new Error(`add(${i}, 1) returned ${r}`);
        i++;
        calls++;
      }
    };
    const started = performance.now();
    const serverCpu = cpuSeconds(pid);
    const clientCpu = process.cpuUsage();
    await Promise.all(Array.from({ length: width }, loop));
    const elapsed = (performance.now() - started) / 1000;
    const client = process.cpuUsage(clientCpu);
    return {
      rate: calls / elapsed,
      serverUs: ((cpuSeconds(pid) - serverCpu) * 1e6) / calls,
      clientUs: (client.user + client.system) / calls,
    };
  } finally {
    api[Symbol.dispose]();
  }
}

const servers = {
  node: start(process.execPath, [nodeServerPath]),
  farcall: start(farcallPath, []),
};
const urls = {
  node: `ws://127.0.0.1:${await servers.node.port}/`,
  farcall: `ws://127.0.0.1:${await servers.farcall.port}/rpc`,
};

const modes = { sequential: 1, [`${inFlight} in flight`]: inFlight };
const best = {};
try {
  for (const [mode, width] of Object.entries(modes)) {
    best[mode] = {};
    for (let round = 0; round < rounds; round++) {
      for (const server of ["node", "farcall"]) {
        const m = await measure(urls[server], servers[server].child.pid, width);
        if (!(best[mode][server]?.rate >= m.rate)) best[mode][server] = m;
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
const rows = Object.entries(best).map(([mode, r]) => ({
  mode,
  node: r.node,
  farcall: r.farcall,
  ratio: r.farcall.rate / r.node.rate,
}));
console.log(
  `capnweb client (Node ${process.version}) calling add() over loopback WebSocket, ` +
    `best of ${rounds} round(s) of ${seconds} s${quick ? " (--quick)" : ""}`,
);
console.log(
  "| mode | Node server calls/s | farcall server calls/s | farcall / Node " +
    "| server CPU µs/call (Node, farcall) | client CPU µs/call (Node, farcall) |",
);
console.log("|---|---:|---:|---:|---:|---:|");
for (const r of rows) {
  console.log(
    `| ${r.mode} | ${fmt(r.node.rate)} | ${fmt(r.farcall.rate)} | ${r.ratio.toFixed(2)} ` +
      `| ${us(r.node.serverUs)}, ${us(r.farcall.serverUs)} | ${us(r.node.clientUs)}, ${us(r.farcall.clientUs)} |`,
  );
}
const round3 = (n) => (Number.isFinite(n) ? Number(n.toFixed(3)) : null);
console.log(
  JSON.stringify({
    bench: "capnweb-server",
    quick,
    seconds,
    rounds,
    in_flight: inFlight,
    results: rows.map((r) => ({
      mode: r.mode,
      node_calls_per_sec: Math.round(r.node.rate),
      farcall_calls_per_sec: Math.round(r.farcall.rate),
      ratio: round3(r.ratio),
      node_server_cpu_us_per_call: round3(r.node.serverUs),
      farcall_server_cpu_us_per_call: round3(r.farcall.serverUs),
      client_cpu_us_per_call_with_node: round3(r.node.clientUs),
      client_cpu_us_per_call_with_farcall: round3(r.farcall.clientUs),
    })),
  }),
);
