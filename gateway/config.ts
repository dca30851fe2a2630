/**
 * The edge's configuration from environment variables, checked at start in
 * the style of kit/config.ts: every bad value reported at once.
 */
import { peerUrlVariable, type ServiceName, serviceCatalog, serviceNames } from "../kit/catalog.ts";
import { ConfigError, EnvReader, readListenerLimits } from "../kit/config.ts";
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

type Env = Record<string, string | undefined>;

const logLevels = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];

export function loadEdgeConfig(env: Env = process.env): EdgeConfig {
  const problems: string[] = [];
  const listenerReader = new EnvReader(env);
  const str = (name: string, fallback: string) => (env[name] === undefined || env[name] === "" ? fallback : env[name]!);
  const int = (name: string, fallback: number, min: number, max: number) => {
    const raw = env[name];
    if (raw === undefined || raw === "") return fallback;
    const n = Number(raw);
    if (Number.isInteger(n) && n >= min && n <= max) return n;
    problems.push(`${name} must be an integer from ${min} to ${max}, got "${raw}"`);
    return fallback;
  };

  const upstreams = Object.fromEntries(
    serviceNames.map((name) => {
      const variable = peerUrlVariable(name);
      const value = str(variable, `http://127.0.0.1:${serviceCatalog[name].port}`);
      let ok = false;
      try {
        ok = new URL(value).protocol === "http:";
      } catch {
        ok = false;
      }
      // The edge speaks HTTP/2 cleartext to the services, as they do to each other.
      if (!ok) problems.push(`${variable} must be an http:// URL (HTTP/2 cleartext), got "${value}"`);
      return [name, value];
    }),
  ) as Record<ServiceName, string>;

  let allowedOrigins: string[] | undefined;
  const rawOrigins = str("EDGE_ALLOWED_ORIGINS", "");
  if (rawOrigins) {
    allowedOrigins = rawOrigins.split(",").map((o) => o.trim()).filter(Boolean);
    for (const origin of allowedOrigins) {
      if (origin === "*") continue;
      let valid = false;
      try {
        valid = new URL(origin).origin === origin;
      } catch {
        valid = false;
      }
      if (!valid) problems.push(`EDGE_ALLOWED_ORIGINS entries must be origins like https://shop.example.com (or *), got "${origin}"`);
    }
  }

  const logLevel = str("LOG_LEVEL", "info");
  if (!logLevels.includes(logLevel)) problems.push(`LOG_LEVEL must be one of ${logLevels.join(", ")}, got "${logLevel}"`);

  const config: EdgeConfig = {
    host: str("HOST", "127.0.0.1"),
    port: int("PORT", edgePolicy.port, 0, 65535),
    logLevel,
    upstreams,
    allowedOrigins,
    maxBodyBytes: int("EDGE_MAX_BODY_BYTES", edgePolicy.maxBodyBytes, 1024, 64 * 1024 * 1024),
    upstreamTimeoutMs: int("EDGE_UPSTREAM_TIMEOUT_MS", edgePolicy.upstreamTimeoutMs, 100, 600_000),
    streamTimeoutMs: int("EDGE_STREAM_TIMEOUT_MS", edgePolicy.streamTimeoutMs, 0, 24 * 3_600_000),
    shutdownGraceMs: int("SHUTDOWN_GRACE_MS", 10_000, 0, 120_000),
    slowCallMs: int("SLOW_CALL_MS", edgePolicy.slowCallMs, 1, 3_600_000),
    listener: readListenerLimits(listenerReader, edgePolicy.listener),
  };
  problems.push(...listenerReader.problems);
  if (problems.length > 0) throw new ConfigError(problems);
  return config;
}
