/**
 * Signed webhooks, one scheme for every provider-facing service (payment
 * providers, parcel carriers), Stripe's: the header is
 * `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">`, with several
 * v1 entries while the sender rotates its secret. A delivery is authentic when
 * any v1 matches any of our current secrets (also several during our own
 * rotation) and t is within the tolerance of our clock, so a captured
 * delivery cannot be replayed later.
 */
import { createHmac, timingSafeEqual } from "node:crypto";
import { unauthenticated } from "./errors.ts";

/** Stripe's default: 5 minutes either side of our clock. */
export const defaultWebhookToleranceSeconds = 300;

/** The signature header of `body` at unix time `t` (senders, the sandbox providers and tests). */
export function signWebhook(body: Uint8Array | string, secret: string, t = Math.floor(Date.now() / 1000)): string {
  return `t=${t},v1=${hmacOf(secret, t, body).toString("hex")}`;
}

function hmacOf(secret: string, t: number | string, body: Uint8Array | string): Buffer {
  return createHmac("sha256", secret).update(`${t}.`).update(body).digest();
}

/**
 * Checks a signature header against the raw body; throws UNAUTHENTICATED
 * (reason INVALID_SIGNATURE) saying what is wrong, without telling which
 * secret would have matched.
 */
export function verifyWebhook(
  header: string,
  body: Uint8Array,
  secrets: readonly string[],
  options: { toleranceSeconds?: number; nowSeconds?: number } = {},
): { timestamp: number } {
  const refuse = (why: string) => unauthenticated(`webhook signature ${why}`, "INVALID_SIGNATURE");
  let t: string | undefined;
  const signatures: Buffer[] = [];
  for (const part of header.split(",")) {
    const eq = part.indexOf("=");
    const key = part.slice(0, eq).trim();
    const value = part.slice(eq + 1).trim();
    if (key === "t") t = value;
    else if (key === "v1" && /^[0-9a-f]{64}$/i.test(value)) signatures.push(Buffer.from(value, "hex"));
  }
  if (t === undefined || !/^\d{1,12}$/.test(t) || signatures.length === 0) throw refuse("is malformed: expected t=<unix seconds>,v1=<hex HMAC-SHA256>");
  const timestamp = Number(t);
  const now = options.nowSeconds ?? Math.floor(Date.now() / 1000);
  const tolerance = options.toleranceSeconds ?? defaultWebhookToleranceSeconds;
  if (Math.abs(now - timestamp) > tolerance) throw refuse(`timestamp is more than ${tolerance} s from our clock (a replay, or the sender's clock is off)`);
  // Every comparison runs, so the time taken does not tell which secret or entry came close.
  let ok = false;
  for (const secret of secrets) {
    const expected = hmacOf(secret, t, body);
    for (const s of signatures) ok = timingSafeEqual(expected, s) || ok;
  }
  if (!ok) throw refuse("does not match the body with any current secret");
  return { timestamp };
}
