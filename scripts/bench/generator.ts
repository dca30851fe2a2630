/**
 * A load generator: a child process of the bench (load.ts starts it), so that its
 * CPU is not the servers' (they run in the bench's main process, which meters its
 * own CPU). It sets up one target, says "ready", then runs the phases it is sent
 * over IPC and answers each with what it measured; it exits when the channel closes.
 * Targets are plain data: an HTTP URL, or an RPC named "pkg.Service/Method"
 * with JSON requests (a "$uuid" string becomes a fresh UUIDv7 on every call).
 * An RPC target with `once` has no fixed requests: the bench supplies prepared ones
 * (each with its own headers) over IPC before a phase, and each is sent exactly once,
 * in order; when none is left, the caller stops (load.ts Exhausted).
 */
import http from "node:http";
import http2 from "node:http2";
import zlib from "node:zlib";
import { createRegistry, fromJson, type JsonValue, toBinary } from "@bufbuild/protobuf";
import { v7 as uuidv7 } from "uuid";
import { loadContractFiles } from "../../gateway/routes.ts";
import { Exhausted, type Phase, runPhase } from "./load.ts";

export type Target =
  | { kind: "http"; urls: string[]; method?: "GET" | "POST" }
  | { kind: "rpc"; protocol: "grpc" | "connect"; baseUrl: string; method: string; requests: JsonValue[]; headers?: Record<string, string>; once?: boolean };

/** A request prepared by the bench for a `once` target, with its own headers (its customer's token). */
export interface Prepared {
  request: JsonValue;
  headers: Record<string, string>;
}

/** The prepared requests of a `once` target not sent yet. */
const queue: Prepared[] = [];

const pick = <T>(list: readonly T[]): T => list[Math.floor(Math.random() * list.length)]!;

function fresh(value: JsonValue): JsonValue {
  if (value === "$uuid") return uuidv7();
  if (Array.isArray(value)) return value.map(fresh);
  if (value && typeof value === "object") return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, fresh(v as JsonValue)]));
  return value;
}

/** What fetch sends besides a request's own headers (Node 24), so the servers see a fetch's request; a request's own headers win, as with fetch. */
const fetchHeaders = { accept: "*/*", "accept-language": "*", "sec-fetch-mode": "cors", "user-agent": "node", "accept-encoding": "gzip, deflate" };
/**
 * At most as many connections as the bench's highest closed-loop concurrency (64), the
 * model of wrk2: in the open loop a request that finds every connection busy waits for
 * one, and its latency still counts from its scheduled time. Without a bound, every
 * request due while the server paused opened a new TCP connection, and the server then
 * spent its time accepting connections, not answering (an open loop at 70% of the
 * closed-loop best through the edge saw a p50 of 161 ms): that measures a storm of
 * reconnecting clients, which browsers (6 connections per origin, or one HTTP/2
 * session) do not make. gRPC has one HTTP/2 session anyway.
 */
const maxConnections = 64;
const agent = new http.Agent({ keepAlive: true, maxSockets: maxConnections });

/**
 * One HTTP/1.1 request with the headers fetch would send, its answer read whole and
 * decompressed at once (gunzipSync). fetch decompresses through a zlib stream per answer,
 * whose native memory V8 counts against its heap: at 160 compressed search answers a second,
 * that made a mark-compact every 0.4 s in the generator (marking steps of up to 32 ms), whose
 * pauses delayed the answers it was timing.
 */
function httpCall(url: string, method: string, headers: Record<string, string>, body: string | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    const sent = body === undefined ? undefined : Buffer.from(body);
    const req = http.request(url, { method, agent, headers: { ...fetchHeaders, ...headers, ...(sent ? { "content-length": sent.length } : {}) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (chunk: Buffer) => chunks.push(chunk));
      res.on("error", reject);
      res.on("end", () => {
        try {
          const raw = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
          const encoding = res.headers["content-encoding"];
          if (encoding === "gzip") zlib.gunzipSync(raw);
          else if (encoding === "deflate") zlib.inflateSync(raw);
        } catch (error) {
          reject(error as Error);
          return;
        }
        // fetch's res.ok: any 2xx.
        const status = res.statusCode ?? 0;
        if (status < 200 || status > 299) reject(new Error(`HTTP ${status}`));
        else resolve();
      });
    });
    req.on("error", reject);
    req.end(sent);
  });
}

/**
 * Lean clients, so the load generator costs about the same for the RPCs as for the
 * baselines: the baselines' GETs and Connect unary (a plain JSON POST) share one HTTP/1.1
 * client with fetch's headers (httpCall); gRPC is one HTTP/2 session with length-prefixed
 * protobuf frames and the grpc-status trailer checked.
 */
async function callerFor(target: Target): Promise<() => Promise<unknown>> {
  if (target.kind === "http") return () => httpCall(pick(target.urls), target.method ?? "GET", {}, target.method === "POST" ? "" : undefined);
  const [serviceName, methodName] = target.method.split("/") as [string, string];
  const registry = createRegistry(...(await loadContractFiles()));
  const method = registry.getService(serviceName)?.methods.find((m) => m.name === methodName);
  if (!method) throw new Error(`unknown RPC ${target.method}`);
  const next = (): Prepared => {
    if (!target.once) return { request: fresh(pick(target.requests)), headers: target.headers ?? {} };
    const item = queue.shift();
    if (!item) throw new Exhausted();
    return item;
  };
  if (target.protocol === "connect") {
    const url = `${target.baseUrl}/${target.method}`;
    return () => {
      const { request, headers } = next();
      return httpCall(url, "POST", { ...headers, "content-type": "application/json" }, JSON.stringify(request));
    };
  }
  const session = http2.connect(target.baseUrl);
  return () =>
    new Promise<void>((resolve, reject) => {
      const { request, headers } = next();
      const payload = toBinary(method.input, fromJson(method.input, request));
      const frame = Buffer.alloc(5 + payload.length);
      frame.writeUInt32BE(payload.length, 1);
      frame.set(payload, 5);
      const stream = session.request({ ":method": "POST", ":path": `/${target.method}`, "content-type": "application/grpc", te: "trailers", ...headers });
      let status: string | undefined;
      stream.on("response", (h) => (status = h["grpc-status"] as string | undefined ?? status));
      stream.on("trailers", (t) => (status = t["grpc-status"] as string | undefined));
      stream.on("data", () => undefined);
      stream.on("error", reject);
      stream.on("end", () => (status === "0" ? resolve() : reject(new Error(`grpc-status ${status}`))));
      stream.end(frame);
    });
}

if (import.meta.main && process.send) {
  const send = process.send.bind(process);
  const call = await callerFor(JSON.parse(process.argv[2]!) as Target);
  process.on("message", (m: { id: number; phase?: Phase; supply?: Prepared[] }) => {
    if (m.supply) {
      queue.push(...m.supply);
      send({ id: m.id });
      return;
    }
    runPhase(call, m.phase!).then(
      (result) => send({ id: m.id, result }),
      (error: unknown) => send({ id: m.id, error: (error as Error).message }),
    );
  });
  process.on("disconnect", () => process.exit(0));
  send("ready");
}
