/**
 * Runs one load measurement in a worker thread, so the load generator has its
 * own event loop and does not steal the servers' (they run in the main thread).
 */
import { parentPort, workerData } from "node:worker_threads";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { UserService } from "../../gen/ecommerce/user/v1/user_pb.js";
import { measure } from "./load.ts";

export type Target =
  | { kind: "http-get"; url: string }
  | { kind: "grpc" | "connect"; baseUrl: string; rpc: "getMyProfile"; headers: Record<string, string> };

export interface Job {
  name: string;
  target: Target;
  concurrency: number;
  durationMs: number;
}

function callerFor(target: Target): () => Promise<unknown> {
  if (target.kind === "http-get") return async () => (await fetch(target.url)).arrayBuffer();
  const transport =
    target.kind === "grpc" ? createGrpcTransport({ baseUrl: target.baseUrl }) : createConnectTransport({ baseUrl: target.baseUrl, httpVersion: "1.1" });
  const client = createClient(UserService, transport);
  return () => client[target.rpc]({}, { headers: target.headers });
}

if (parentPort) {
  const job = workerData as Job;
  const result = await measure(job.name, job.concurrency, job.durationMs, callerFor(job.target));
  parentPort.postMessage(result);
}
