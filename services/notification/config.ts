/**
 * The Notification service's own settings (the kit's config covers ports,
 * database, NATS and limits). Checked at start, every problem reported at once.
 *
 * SMTP (nodemailer):
 * - SMTP_URL: smtp://user:pass@host:port or smtps://… (implicit TLS); when set,
 *   it replaces SMTP_HOST / SMTP_PORT / SMTP_USER / SMTP_PASSWORD.
 * - SMTP_HOST (default 127.0.0.1), SMTP_PORT (default 1025, the port of the local
 *   mail catchers maildev and mailpit).
 * - SMTP_TLS: "implicit" (TLS from the first byte, usually port 465),
 *   "starttls" (STARTTLS required), "opportunistic" (STARTTLS when offered,
 *   default) or "off" (never).
 * - SMTP_USER / SMTP_PASSWORD: credentials, when the server wants them.
 * - SMTP_FROM: the sender, default "Shop <no-reply@shop.test>".
 * - SMTP_TIMEOUT_MS: connection and greeting timeout, default 10000.
 * Links and keys:
 * - SHOP_NAME: the shop's name in every message ({{shop_name}}), default "Shop".
 * - STOREFRONT_URL: base of every link in a message (verification, reset,
 *   orders); default http://localhost:3000.
 * - NOTIFICATION_PUBLIC_URL: the public address of the edge, where mail clients
 *   POST the one-click unsubscribe (POST /unsubscribe/<token>, RFC 8058; the edge
 *   makes it an Unsubscribe call); default http://127.0.0.1:8080.
 * - NOTIFICATION_UNSUBSCRIBE_KEY: HMAC key of unsubscribe tokens (32+ chars;
 *   a development value outside production).
 * - NOTIFICATION_DATA_KEY: base64 of 32 bytes, seals the unredacted content
 *   of a queued message until it is sent (development key outside production).
 * - EVENT_KEY_NOTIFICATION: opens the tokens Auth seals for us (kit/events/sealed.ts);
 *   checked at start (required in production).
 * Delivery:
 * - NOTIFICATION_DELIVERY_EVERY_MS: how often the delivery job looks for due
 *   messages, default 1000.
 * - NOTIFICATION_MAX_ATTEMPTS: attempts before a message is FAILED, default 8.
 * - NOTIFICATION_RETRY_BASE_MS / NOTIFICATION_RETRY_MAX_MS: backoff of
 *   temporary failures (base·2^(attempt−1), capped), default 2000 / 600000.
 * - PEER_LOOKUP_TIMEOUT_MS: deadline of the calls that complete an event's data
 *   from its owning service, default 3000.
 */
import { createHash } from "node:crypto";
import { type Env, EnvReader } from "../../kit/env.ts";
import { eventKey } from "../../kit/events/sealed.ts";

export type SmtpTls = "implicit" | "starttls" | "opportunistic" | "off";

export interface SmtpConfig {
  host: string;
  port: number;
  tls: SmtpTls;
  user: string;
  password: string;
  from: string;
  timeoutMs: number;
}

export interface NotificationConfig {
  smtp: SmtpConfig;
  shopName: string;
  storefrontUrl: string;
  publicUrl: string;
  unsubscribeKey: string;
  dataKey: Buffer;
  eventKey: Buffer;
  deliveryEveryMs: number;
  maxAttempts: number;
  retryBaseMs: number;
  retryMaxMs: number;
  peerTimeoutMs: number;
  /** Unsubscribe calls (RPC and the edge's one-click POST) per client address per minute. */
  unsubscribesPerMinute: number;
}

export const developmentDataKey: Buffer = createHash("sha256").update("dev-only-notification-data-key-do-not-use-in-production").digest();

function smtpOf(r: EnvReader, env: Env): SmtpConfig {
  const tls = r.oneOf<SmtpTls>("SMTP_TLS", "opportunistic", ["implicit", "starttls", "opportunistic", "off"]);
  const from = r.string("SMTP_FROM", "Shop <no-reply@shop.test>");
  const timeoutMs = r.int("SMTP_TIMEOUT_MS", 10_000, 100, 120_000);
  const url = env.SMTP_URL ?? "";
  if (url !== "") {
    try {
      const u = new URL(url);
      if (u.protocol !== "smtp:" && u.protocol !== "smtps:") throw new Error("protocol");
      return {
        host: u.hostname,
        port: Number(u.port || (u.protocol === "smtps:" ? 465 : 587)),
        tls: u.protocol === "smtps:" ? "implicit" : tls,
        user: decodeURIComponent(u.username),
        password: decodeURIComponent(u.password),
        from,
        timeoutMs,
      };
    } catch {
      r.problem(`SMTP_URL must be an smtp:// or smtps:// URL, got "${url}"`);
    }
  }
  return {
    host: r.string("SMTP_HOST", "127.0.0.1"),
    port: r.int("SMTP_PORT", 1025, 1, 65_535),
    tls,
    user: r.string("SMTP_USER", ""),
    password: r.string("SMTP_PASSWORD", ""),
    from,
    timeoutMs,
  };
}

export function loadNotificationConfig(env: Env = process.env): NotificationConfig {
  const r = new EnvReader(env);
  const smtp = smtpOf(r, env);
  const storefrontUrl = r.url("STOREFRONT_URL", "http://localhost:3000", ["http:", "https:"]).replace(/\/+$/, "");
  const publicUrl = r.url("NOTIFICATION_PUBLIC_URL", "http://127.0.0.1:8080", ["http:", "https:"]).replace(/\/+$/, "");
  const unsubscribeKey = r.secret("NOTIFICATION_UNSUBSCRIBE_KEY", "dev-only-notification-unsubscribe-key-do-not-use");
  const dataKey = r.key("NOTIFICATION_DATA_KEY", developmentDataKey);
  let key = developmentDataKey;
  try {
    key = eventKey("notification", env);
  } catch (error) {
    r.problem((error as Error).message);
  }
  return r.done(
    {
      smtp,
      shopName: r.string("SHOP_NAME", "Shop"),
      storefrontUrl,
      publicUrl,
      unsubscribeKey,
      dataKey,
      eventKey: key,
      deliveryEveryMs: r.int("NOTIFICATION_DELIVERY_EVERY_MS", 1_000, 20, 3_600_000),
      maxAttempts: r.int("NOTIFICATION_MAX_ATTEMPTS", 8, 1, 100),
      retryBaseMs: r.int("NOTIFICATION_RETRY_BASE_MS", 2_000, 1, 3_600_000),
      retryMaxMs: r.int("NOTIFICATION_RETRY_MAX_MS", 600_000, 1, 24 * 3_600_000),
      peerTimeoutMs: r.int("PEER_LOOKUP_TIMEOUT_MS", 3_000, 100, 30_000),
      unsubscribesPerMinute: r.int("NOTIFICATION_RATE_LIMIT_UNSUBSCRIBE", 30, 1, 1_000_000),
    },
    "notification service configuration",
  );
}
