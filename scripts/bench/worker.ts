/**
 * Runs one load measurement in a worker thread, so the load generator has its
 * own event loop and does not steal the servers' (they run in the main thread).
 * Targets are plain data: an HTTP URL, or an RPC named "pkg.Service/Method"
 * with JSON requests (a "$uuid" string becomes a fresh UUIDv7 on every call).
 */
import { parentPort, workerData } from "node:worker_threads";
import { createRegistry, fromJson, type JsonValue } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { v7 as uuidv7 } from "uuid";
import { loadContractFiles } from "../../gateway/routes.ts";
import { measure } from "./load.ts";

export type Target =
  | { kind: "http"; urls: string[]; method?: "GET" | "POST" }
  | { kind: "rpc"; protocol: "grpc" | "connect"; baseUrl: string; method: string; requests: JsonValue[]; headers?: Record<string, string> };

export interface Job {
  name: string;
  target: Target;
  concurrency: number;
  durationMs: number;
}

const pick = <T>(list: readonly T[]): T => list[Math.floor(Math.random() * list.length)]!;

function fresh(value: JsonValue): JsonValue {
  if (value === "$uuid") return uuidv7();
  if (Array.isArray(value)) return value.map(fresh);
  if (value && typeof value === "object") return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, fresh(v as JsonValue)]));
  return value;
}

async function callerFor(target: Target): Promise<() => Promise<unknown>> {
  if (target.kind === "http") {
    return async () => (await fetch(pick(target.urls), { method: target.method ?? "GET" })).arrayBuffer();
  }
  const [serviceName, methodName] = target.method.split("/") as [string, string];
  const registry = createRegistry(...(await loadContractFiles()));
  const service = registry.getService(serviceName);
  const method = service?.methods.find((m) => m.name === methodName);
  if (!service || !method) throw new Error(`unknown RPC ${target.method}`);
  const transport = target.protocol === "grpc" ? createGrpcTransport({ baseUrl: target.baseUrl }) : createConnectTransport({ baseUrl: target.baseUrl, httpVersion: "1.1" });
  const client = createClient(service, transport) as unknown as Record<string, (req: unknown, opts: unknown) => Promise<unknown>>;
  const call = client[method.localName]!;
  return () => call(fromJson(method.input, fresh(pick(target.requests))), { headers: target.headers ?? {} });
}

if (parentPort) {
  const job = workerData as Job;
  const result = await measure(job.name, job.concurrency, job.durationMs, await callerFor(job.target));
  parentPort.postMessage(result);
}
