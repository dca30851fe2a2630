/**
 * `node scripts/bench/kit-overhead.ts [calls] [rounds]`: the kit's own CPU per call of
 * GetMyProfile, measured in process, without the network, so that before/after
 * comparisons of the kit's hot path hold on a busy machine (docs/kit.md, "The RPC hot path").
 *
 * Each call is a gRPC request handed straight to connect's universal handler (what
 * connect-node's adapter does after reading the HTTP/2 stream), awaited to its trailers,
 * one at a time. Four variants, interleaved round by round:
 * - "bare": a router without interceptors answering with plain pg (scripts/bench/bare.ts);
 * - "kit": the user service's own interceptors, context values and routes (service.ts),
 *   with the grpc-timeout the server's clamp gives a call without one;
 * - "bare, no db" / "kit, no db": the same without the database (the handler answers a
 *   fixed profile; the kit's still asks who is calling): the interceptor chain alone.
 * Prints CPU µs per call (process.cpuUsage: all threads) of each, and kit minus bare;
 * `ONLY=kit` runs one variant; `PROFILE=/tmp/x.cpuprofile` writes a CPU profile of the measured rounds.
 */
import { writeFileSync } from "node:fs";
import { Session } from "node:inspector/promises";
import { create, toBinary } from "@bufbuild/protobuf";
import { createClient, createConnectRouter, type ConnectRouter, type Interceptor } from "@connectrpc/connect";
import type { UniversalHandler } from "@connectrpc/connect/protocol";
import { createGrpcTransport } from "@connectrpc/connect-node";
import pg from "pg";
import { AuthService } from "../../gen/ecommerce/auth/v1/auth_pb.js";
import { GetMyProfileRequestSchema, UserService } from "../../gen/ecommerce/user/v1/user_pb.js";
import { requireUser } from "../../kit/auth/principal.ts";
import { eventually, startMesh } from "../../kit/testing/mesh.ts";
import { authService } from "../../services/auth/service.ts";
import { type ProfileFields, profileColumns, profileMessage } from "../../services/user/mapping.ts";
import { userService } from "../../services/user/service.ts";

const calls = Number(process.argv[2] ?? 20_000);
const rounds = Number(process.argv[3] ?? 5);

const mesh = await startMesh([authService, userService], {});
const auth = createClient(AuthService, createGrpcTransport({ baseUrl: mesh.url("auth") }));
const registered = await auth.register({ email: `overhead${Date.now()}@example.test`, password: "quartz lantern bench river 8812" });
const token = registered.tokens!.accessToken;
const userId = registered.user!.id;
const direct = createClient(UserService, createGrpcTransport({ baseUrl: mesh.url("user") }));
await eventually(() => direct.getMyProfile({}, { headers: { authorization: `Bearer ${token}` } }).catch(() => undefined), 15_000, "profile");

const user = mesh.services.user!;
const { config } = user.ctx;
const pool = new pg.Pool({ connectionString: config.databaseUrl, max: 10 });
const profileSql = `select ${profileColumns} from user_profiles p where p.user_id = $1`;
const fixed = profileMessage((await pool.query<ProfileFields>(profileSql, [userId])).rows[0]!);

const method = `/${UserService.typeName}/GetMyProfile`;
function handlerOf(interceptors: readonly Interceptor[], routes: (router: ConnectRouter) => void): UniversalHandler {
  const router = createConnectRouter({ interceptors: [...interceptors], readMaxBytes: config.limits.maxMessageBytes, writeMaxBytes: config.limits.maxResponseBytes });
  routes(router);
  return router.handlers.find((h) => h.requestPath === method)!;
}

const state = await userService.setup!(user.ctx);
const handlers = {
  bare: handlerOf([], (router) =>
    router.service(UserService, {
      async getMyProfile() {
        const { rows } = await pool.query<ProfileFields>(profileSql, [userId]);
        return { profile: profileMessage(rows[0]!) };
      },
    }),
  ),
  kit: handlerOf(user.chain.interceptors, (router) => userService.routes(router, user.ctx, state)),
  "bare, no db": handlerOf([], (router) => router.service(UserService, { getMyProfile: () => ({ profile: fixed }) })),
  "kit, no db": handlerOf(user.chain.interceptors, (router) =>
    router.service(UserService, { getMyProfile: (_req, ctx) => (requireUser(ctx), { profile: fixed }) }),
  ),
};

// A gRPC request as connect-node's adapter hands it over: the enveloped message, the
// client's headers; the kit's also carries the deadline its clamp adds to a call without one.
const message = toBinary(GetMyProfileRequestSchema, create(GetMyProfileRequestSchema, {}));
const envelope = new Uint8Array(5 + message.length);
new DataView(envelope.buffer).setUint32(1, message.length);
envelope.set(message, 5);
const grpcHeaders = { "content-type": "application/grpc+proto", te: "trailers", "user-agent": "connect-es/2.2.0", authorization: `Bearer ${token}` };

async function call(name: keyof typeof handlers): Promise<void> {
  const kit = name.startsWith("kit");
  const header = new Headers(kit ? { ...grpcHeaders, "grpc-timeout": `${config.limits.maxTimeoutMs}m` } : grpcHeaders);
  const res = await handlers[name]({
    httpVersion: "2.0",
    method: "POST",
    url: `http://127.0.0.1${method}`,
    header,
    body: (async function* () {
      yield envelope;
    })(),
    signal: new AbortController().signal,
    contextValues: kit ? user.chain.contextValues("127.0.0.1") : undefined,
  });
  let bytes = 0;
  for await (const chunk of res.body ?? []) bytes += chunk.length;
  const status = res.trailer?.get("grpc-status");
  if (status !== "0" || bytes === 0) throw new Error(`${name}: grpc-status ${status} ${res.trailer?.get("grpc-message") ?? ""}`);
}

async function measure(name: keyof typeof handlers, n: number): Promise<number> {
  const c0 = process.cpuUsage();
  for (let i = 0; i < n; i++) await call(name);
  const c = process.cpuUsage(c0);
  return (c.user + c.system) / n;
}

// Batches of the variants in turn, so that other work on the machine falls on all of them
// alike; its interference only ever adds, so the quickest batches are the least disturbed.
const only = process.env.ONLY?.split(",");
const names = (Object.keys(handlers) as (keyof typeof handlers)[]).filter((n) => !only || only.includes(n));
const batch = 250;
for (const name of names) await measure(name, 3000); // warm-up (JIT, pools)
const results = new Map<string, number[]>(names.map((n) => [n, []]));
const session = process.env.PROFILE ? new Session() : undefined;
if (session) {
  session.connect();
  await session.post("Profiler.enable");
  await session.post("Profiler.setSamplingInterval", { interval: 50 });
  await session.post("Profiler.start");
}
for (let round = 1; round <= rounds; round++) {
  for (let b = 0; b < calls / batch; b++) for (const name of names) results.get(name)!.push(await measure(name, batch));
  console.log(`round ${round}: ${names.map((n) => `${n} ${quantile(results.get(n)!.slice(-calls / batch), 0.25).toFixed(1)}`).join(", ")} µs CPU/call (p25 of its batches)`);
}
if (session) {
  writeFileSync(process.env.PROFILE!, JSON.stringify((await session.post("Profiler.stop")).profile));
  console.log(`profile of the measured rounds: ${process.env.PROFILE}`);
}
function quantile(xs: number[], q: number): number {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.floor(q * (sorted.length - 1))]!;
}
const row = (label: string, f: (q: number) => number) => console.log(`  ${label.padEnd(22)} ${[0, 0.25, 0.5].map((q) => f(q).toFixed(1).padStart(7)).join("")}`);
console.log(`\n${results.get(names[0]!)!.length} batches of ${batch} calls per variant; µs CPU/call of the batches:\n  ${"".padEnd(22)}     min    p25    p50`);
for (const name of names) row(name, (q) => quantile(results.get(name)!, q));
// The kit's cost: the same quantile of the kit's batches minus the bare ones'. The minimum is
// the least disturbed by other work on the machine; a difference of noisy medians can mislead.
const has = (n: string) => results.has(n);
const diff = (a: string, b: string) => (q: number) => quantile(results.get(a)!, q) - quantile(results.get(b)!, q);
if (has("kit") && has("bare")) row("kit - bare", diff("kit", "bare"));
if (has("kit, no db") && has("bare, no db")) row("kit - bare, no db", diff("kit, no db", "bare, no db"));
if (has("kit") && has("bare")) row("kit / bare (ratio)", (q) => quantile(results.get("kit")!, q) / quantile(results.get("bare")!, q));
await pool.end();
await mesh.stop();
process.exit(0);
