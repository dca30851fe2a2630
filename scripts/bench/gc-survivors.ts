/**
 * `node scripts/bench/gc-survivors.ts [case ...]`: how much memory survives each scavenge (V8's
 * young-generation collection), per case, and how long the scavenges take. Each case runs for
 * a few seconds in a child process under `--trace-gc-nvp`; the figures are the medians of its
 * scavenges after the first three (start-up). What survives a scavenge is copied, and here nearly all of it
 * is promoted to the old generation, which then needs full collections: the cost the bench's
 * open-loop p99s show (docs/bench.md, "What the scavenges find alive").
 *
 * Cases (all by default):
 * - `generator-declared`: a generator function declared once, called and finished per iteration.
 * - `generator-per-call`: the same generator as a function expression made per call, which is what
 *   TypeScript's downlevel of `async function*` emits (`__asyncGenerator(this, arguments, function* () {…})`),
 *   and what connect's ES2017 build runs several times per RPC.
 * - `constructor-per-call`: a plain function made per call and instantiated with `new` (also given
 *   its own initial map on first use): the same effect, so the cost is the per-function map, not generators.
 * - `http2`: a node:http2 server answering gRPC-framed unary requests, one at a time, from a client process.
 * - `connect`: connect-node's adapter answering the same requests (grpc.health.v1 Health/Check).
 */
import { fork, spawnSync } from "node:child_process";
import http2 from "node:http2";

const cases = ["generator-declared", "generator-per-call", "constructor-per-call", "http2", "connect"] as const;
type Case = (typeof cases)[number];
const seconds = 4;

const [flag, arg, port] = process.argv.slice(2);
if (flag === "--run") await run(arg as Case);
else if (flag === "--client") await client(Number(port));
else report((process.argv.slice(2).length > 0 ? process.argv.slice(2) : cases) as Case[]);

function report(selected: Case[]): void {
  console.log("case                  scavenges  survived KB (median)  pause ms (median)  allocated MB between two");
  for (const c of selected) {
    if (!cases.includes(c)) throw new Error(`unknown case ${c}; cases: ${cases.join(", ")}`);
    const out = spawnSync(process.execPath, ["--trace-gc-nvp", import.meta.filename, "--run", c], { encoding: "utf8", maxBuffer: 64 * 1024 * 1024 });
    if (out.status !== 0) throw new Error(`${c} failed:\n${out.stderr}`);
    const scavenges = out.stdout
      .split("\n")
      .filter((l) => l.includes("gc=s"))
      .map((l) => Object.fromEntries(l.split(/\s+/).filter((kv) => kv.includes("=")).map((kv) => kv.split("=", 2) as [string, string])))
      .slice(3);
    const median = (f: (s: Record<string, string>) => number) => scavenges.map(f).sort((a, b) => a - b)[scavenges.length >> 1] ?? NaN;
    console.log(
      `${c.padEnd(22)}${String(scavenges.length).padStart(9)}${median((s) => Number(s.new_space_survived) / 1e3).toFixed(0).padStart(22)}` +
        `${median((s) => Number(s.pause)).toFixed(1).padStart(19)}${median((s) => Number(s.allocated) / 1e6).toFixed(1).padStart(26)}`,
    );
  }
}

function* declared(payload: object) {
  const x: unknown = yield payload;
  yield x;
}

async function run(c: Case): Promise<void> {
  const end = Date.now() + seconds * 1000;
  if (c === "constructor-per-call") {
    while (Date.now() < end) {
      const payload = { values: new Array(50).fill(0) };
      const Holder = function (this: { payload: object }) {
        this.payload = payload;
      } as unknown as new () => { payload: object };
      void new Holder();
      await null;
    }
    return;
  }
  if (c === "generator-declared" || c === "generator-per-call") {
    while (Date.now() < end) {
      const payload = { values: new Array(50).fill(0) };
      const g =
        c === "generator-declared"
          ? declared(payload)
          : (function* (p: object) {
              const x: unknown = yield p;
              yield x;
            })(payload);
      g.next(g.next().value);
      g.return(undefined);
      await null;
    }
    return;
  }
  let server: http2.Http2Server;
  if (c === "http2") {
    server = http2.createServer();
    server.on("stream", (stream) => {
      stream.on("data", () => undefined);
      stream.on("end", () => {
        stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
        stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
        stream.end(Buffer.from([0, 0, 0, 0, 2, 8, 1]));
      });
    });
  } else {
    const { connectNodeAdapter } = await import("@connectrpc/connect-node");
    const { Health, HealthCheckResponse_ServingStatus } = await import("../../gen/grpc/health/v1/health_pb.js");
    server = http2.createServer(
      connectNodeAdapter({
        routes: (router) =>
          router.service(Health, {
            check: () => ({ status: HealthCheckResponse_ServingStatus.SERVING }),
            async *watch() {
              yield { status: HealthCheckResponse_ServingStatus.SERVING };
            },
          }),
      }),
    );
  }
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const child = fork(import.meta.filename, ["--client", "", String((server.address() as { port: number }).port)], { execArgv: [] });
  await new Promise((resolve) => child.once("exit", resolve));
  server.close();
}

/** One request at a time for the case's duration (its own process, so its allocations are not counted). */
async function client(to: number): Promise<void> {
  const session = http2.connect(`http://127.0.0.1:${to}`);
  const end = Date.now() + seconds * 1000;
  while (Date.now() < end) {
    await new Promise<void>((resolve, reject) => {
      const s = session.request({ ":method": "POST", ":path": "/grpc.health.v1.Health/Check", "content-type": "application/grpc", te: "trailers" });
      s.on("data", () => undefined);
      s.once("end", resolve);
      s.once("error", reject);
      s.end(Buffer.from([0, 0, 0, 0, 0]));
    });
  }
  session.close();
}
