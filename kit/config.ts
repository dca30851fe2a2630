/**
 * Service configuration from environment variables, with the defaults of
 * ARCHITECTURE.md. Every value is checked at start; all bad values are reported
 * at once, each with what was expected, so a misconfigured service never starts.
 */
import { peerUrlVariable, type ServiceName, serviceCatalog, serviceNames } from "./catalog.ts";
import { ConfigError, type Env, EnvReader } from "./env.ts";

export { ConfigError, type Env, EnvReader };
import { defaultListenerLimits, type ListenerLimits } from "./listener.ts";

export interface ServiceConfig {
  service: ServiceName;
  host: string;
  port: number;
  databaseUrl: string;
  /** Most PostgreSQL connections this process opens (DB_POOL_SIZE). */
  dbPoolSize: number;
  natsUrl: string;
  logLevel: string;
  /** Unary calls taking at least this long are logged at warn whatever the level (SLOW_CALL_MS). */
  slowCallMs: number;
  /** Base URLs of the other services (gRPC over HTTP/2 cleartext). */
  peers: Record<ServiceName, string>;
  /** This service's secret, presented to Auth's IssueServiceToken for a service credential. */
  serviceSecret: string;
  /**
   * Secret page tokens are signed with (PAGE_TOKEN_KEY); by default the service secret.
   * The same on every replica, so any replica continues a list another one started.
   */
  pageTokenKey: string;
  /** Proxies in front of the service whose X-Forwarded-For entries are trusted (client-address.ts). */
  trustedProxyHops: number;
  limits: {
    /** Largest request message a client may send, in bytes. */
    maxMessageBytes: number;
    /**
     * Largest response message, in bytes. Separate from the request limit: a server
     * that only takes small requests still answers reflection's descriptor sets.
     */
    maxResponseBytes: number;
    /** Upper bound on a client's requested deadline, in ms. */
    maxTimeoutMs: number;
    /** Deadline of outbound calls to other services, in ms. */
    callTimeoutMs: number;
    /** How long shutdown waits for in-flight calls, in ms. */
    shutdownGraceMs: number;
    /** Timeouts and limits of the port's connections (kit/listener.ts). */
    listener: ListenerLimits;
  };
  events: {
    /** Deliveries of one event before it goes to the dead-letter store. */
    maxDeliveries: number;
    /** How long JetStream waits for an ack before redelivering, in ms. */
    ackWaitMs: number;
    /** How often the outbox relay looks for unpublished rows besides being woken by commits that wrote one, in ms. */
    outboxPollMs: number;
  };
  /** How long infrastructure rows are kept (kit/retention.ts), in ms. */
  retention: {
    /** Published outbox rows. */
    outboxMs: number;
    /** Processed inbox rows: must outlive every redelivery (stream max age 7 days), see docs/kit.md. */
    inboxMs: number;
    /** Dead letters that were replayed successfully. */
    deadLetterMs: number;
    /** Time between retention passes. */
    intervalMs: number;
  };
}

const day = 24 * 3_600_000;

/** PostgreSQL connections per service process (DB_POOL_SIZE); docs/kit.md says how it was sized. */
export const defaultPoolSize = 10;

const logLevels = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];

/**
 * Development-only service secrets, known to Auth's default SERVICE_CREDENTIALS.
 * Production deployments set SERVICE_SECRET (and Auth's SERVICE_CREDENTIALS) from a secret store.
 */
export function developmentServiceSecret(service: string): string {
  return `dev-only-service-secret-${service}-do-not-use-in-production`;
}

/** The connection limits of a server port, from the same variables for every service and the edge. */
export function readListenerLimits(r: EnvReader, defaults: ListenerLimits = defaultListenerLimits): ListenerLimits {
  const limits: ListenerLimits = {
    headersTimeoutMs: r.int("HEADERS_TIMEOUT_MS", defaults.headersTimeoutMs, 100, 600_000),
    requestTimeoutMs: r.int("REQUEST_TIMEOUT_MS", defaults.requestTimeoutMs, 100, 3_600_000),
    keepAliveTimeoutMs: r.int("KEEP_ALIVE_TIMEOUT_MS", defaults.keepAliveTimeoutMs, 100, 600_000),
    http2IdleTimeoutMs: r.int("HTTP2_IDLE_TIMEOUT_MS", defaults.http2IdleTimeoutMs, 100, 86_400_000),
    http2MaxConcurrentStreams: r.int("HTTP2_MAX_CONCURRENT_STREAMS", defaults.http2MaxConcurrentStreams, 1, 100_000),
    http2MaxSessionMemoryMb: r.int("HTTP2_MAX_SESSION_MEMORY_MB", defaults.http2MaxSessionMemoryMb, 1, 1_024),
    maxConnections: r.int("MAX_CONNECTIONS", defaults.maxConnections, 1, 1_000_000),
  };
  // Node refuses a request timeout shorter than the headers timeout.
  if (limits.requestTimeoutMs < limits.headersTimeoutMs) {
    r.problems.push(`REQUEST_TIMEOUT_MS (${limits.requestTimeoutMs}) must not be shorter than HEADERS_TIMEOUT_MS (${limits.headersTimeoutMs})`);
  }
  return limits;
}

export function loadConfig(service: ServiceName, env: Env = process.env): ServiceConfig {
  const r = new EnvReader(env);
  const defaults = serviceCatalog[service];
  const peers = Object.fromEntries(
    serviceNames.map((name) => [
      name,
      r.url(peerUrlVariable(name), `http://127.0.0.1:${serviceCatalog[name].port}`, ["http:", "https:"]),
    ]),
  ) as Record<ServiceName, string>;
  const config: ServiceConfig = {
    service,
    host: r.string("HOST", "127.0.0.1"),
    port: r.int("PORT", defaults.port, 0, 65535),
    databaseUrl: r.url("DATABASE_URL", `postgres://postgres@127.0.0.1:5432/${defaults.database}`, ["postgres:", "postgresql:"]),
    dbPoolSize: r.int("DB_POOL_SIZE", defaultPoolSize, 1, 1_000),
    natsUrl: r.url("NATS_URL", "nats://127.0.0.1:4222", ["nats:", "tls:"]),
    logLevel: r.oneOf("LOG_LEVEL", "info", logLevels),
    slowCallMs: r.int("SLOW_CALL_MS", 1_000, 1, 3_600_000),
    peers,
    serviceSecret: r.string("SERVICE_SECRET", developmentServiceSecret(service)),
    pageTokenKey: r.string("PAGE_TOKEN_KEY", r.string("SERVICE_SECRET", developmentServiceSecret(service))),
    trustedProxyHops: r.int("TRUSTED_PROXY_HOPS", 1, 0, 10),
    limits: {
      maxMessageBytes: r.int("MAX_MESSAGE_BYTES", 4 * 1024 * 1024, 1024, 64 * 1024 * 1024),
      maxResponseBytes: r.int("MAX_RESPONSE_BYTES", 4 * 1024 * 1024, 256 * 1024, 64 * 1024 * 1024),
      maxTimeoutMs: r.int("MAX_TIMEOUT_MS", 30_000, 100, 600_000),
      callTimeoutMs: r.int("CALL_TIMEOUT_MS", 5_000, 50, 120_000),
      shutdownGraceMs: r.int("SHUTDOWN_GRACE_MS", 10_000, 0, 120_000),
      listener: readListenerLimits(r),
    },
    events: {
      maxDeliveries: r.int("EVENT_MAX_DELIVERIES", 5, 1, 100),
      ackWaitMs: r.int("EVENT_ACK_WAIT_MS", 30_000, 1_000, 600_000),
      outboxPollMs: r.int("OUTBOX_POLL_MS", 1_000, 50, 3_600_000),
    },
    retention: {
      outboxMs: r.int("OUTBOX_RETENTION_MS", day, 60_000, 365 * day),
      // Below the stream's max age an event still in the stream could be re-run after its inbox row is gone.
      inboxMs: r.int("INBOX_RETENTION_MS", 30 * day, 8 * day, 3650 * day),
      deadLetterMs: r.int("DEAD_LETTER_RETENTION_MS", 30 * day, day, 3650 * day),
      intervalMs: r.int("RETENTION_INTERVAL_MS", 3_600_000, 1_000, day),
    },
  };
  if (config.serviceSecret.length < 32) r.problems.push("SERVICE_SECRET must be at least 32 characters");
  if (config.pageTokenKey.length < 32) r.problems.push("PAGE_TOKEN_KEY must be at least 32 characters");
  if (env.NODE_ENV === "production" && config.serviceSecret === developmentServiceSecret(service)) {
    r.problems.push("SERVICE_SECRET must be set in production (it is the development default)");
  }
  if (r.problems.length > 0) throw new ConfigError(r.problems);
  return config;
}
