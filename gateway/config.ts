/**
 * The edge's configuration from environment variables, checked at start in
 * the style of kit/config.ts: every bad value reported at once.
 */
import { peerUrlVariable, type ServiceName, serviceCatalog, serviceNames } from "../kit/catalog.ts";
import { type Env, EnvReader, readListenerLimits } from "../kit/config.ts";
import type { ListenerLimits } from "../kit/listener.ts";
import { edgePolicy } from "./routes.ts";

export interface EdgeConfig {
  host: string;
  port: number;
  logLevel: string;
  /** Base URL of each service (gRPC over HTTP/2 cleartext), e.g. http://127.0.0.1:50052. */
  upstreams: Record<ServiceName, string>;
  /** Exact origins browsers may call from ("*" for any); undefined: localhost only. */
  allowedOrigins: string[] | undefined;
  maxBodyBytes: number;
  upstreamTimeoutMs: number;
  /** Idle timeout of server streams; 0 for none. */
  streamTimeoutMs: number;
  shutdownGraceMs: number;
  /** Unary requests at least this slow are logged at warn; successful ones otherwise at debug. */
  slowCallMs: number;
  /** Timeouts and limits of client connections: the services' variables (HEADERS_TIMEOUT_MS …), edge defaults. */
  listener: ListenerLimits;
}

const logLevels = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;

export function loadEdgeConfig(env: Env = process.env): EdgeConfig {
  const r = new EnvReader(env);
  // The edge speaks HTTP/2 cleartext to the services, as they do to each other.
  const upstreams = Object.fromEntries(
    serviceNames.map((name) => [name, r.url(peerUrlVariable(name), `http://127.0.0.1:${serviceCatalog[name].port}`, ["http:"])]),
  ) as Record<ServiceName, string>;

  const origins = r.list("EDGE_ALLOWED_ORIGINS", []);
  for (const origin of origins) {
    if (origin === "*") continue;
    let valid = false;
    try {
      valid = new URL(origin).origin === origin;
    } catch {
      valid = false;
    }
    if (!valid) r.problem(`EDGE_ALLOWED_ORIGINS entries must be origins like https://shop.example.com (or *), got "${origin}"`);
  }

  return r.done({
    host: r.string("HOST", "127.0.0.1"),
    port: r.int("PORT", edgePolicy.port, 0, 65535),
    logLevel: r.oneOf("LOG_LEVEL", "info", logLevels),
    upstreams,
    allowedOrigins: origins.length > 0 ? origins : undefined,
    maxBodyBytes: r.int("EDGE_MAX_BODY_BYTES", edgePolicy.maxBodyBytes, 1024, 64 * 1024 * 1024),
    upstreamTimeoutMs: r.int("EDGE_UPSTREAM_TIMEOUT_MS", edgePolicy.upstreamTimeoutMs, 100, 600_000),
    streamTimeoutMs: r.int("EDGE_STREAM_TIMEOUT_MS", edgePolicy.streamTimeoutMs, 0, 24 * 3_600_000),
    shutdownGraceMs: r.int("SHUTDOWN_GRACE_MS", 10_000, 0, 120_000),
    slowCallMs: r.int("SLOW_CALL_MS", edgePolicy.slowCallMs, 1, 3_600_000),
    listener: readListenerLimits(r, edgePolicy.listener),
  }, "edge configuration");
}
