/**
 * Secrets carried by events (reset and verification tokens) are sealed for the
 * one service that consumes them, so the producer's outbox, the stream, dead
 * letters and every other subscriber hold only ciphertext. AES-256-GCM
 * (kit/sealing.ts) with the consumer's event key: `EVENT_KEY_<SERVICE>` (32
 * bytes, base64 or hex), held by that consumer and by the producers that seal
 * for it. Without it a development key derived from the service name is used;
 * production refuses it. The associated data binds a sealed value to its event
 * type, field and subject id, so it does not open when copied into another event.
 */
import { createHash } from "node:crypto";
import { openText, sealText } from "../sealing.ts";

type Env = Record<string, string | undefined>;

export function eventKeyVariable(service: string): string {
  return `EVENT_KEY_${service.toUpperCase()}`;
}

/** The development default of EVENT_KEY_<SERVICE>; public, refused in production. */
export function developmentEventKey(service: string): Buffer {
  return createHash("sha256").update(`dev-only-event-key-${service}-do-not-use-in-production`).digest();
}

/** The event key of `service`: from EVENT_KEY_<SERVICE>, or the development key outside production. */
export function eventKey(service: string, env: Env = process.env): Buffer {
  const name = eventKeyVariable(service);
  const raw = env[name] ?? "";
  if (raw === "") {
    if (env.NODE_ENV === "production") throw new Error(`${name} must be set in production (the development event key is public)`);
    return developmentEventKey(service);
  }
  const key = /^[0-9a-f]{64}$/i.test(raw) ? Buffer.from(raw, "hex") : Buffer.from(raw, "base64");
  if (key.length !== 32) throw new Error(`${name} must be 32 bytes, base64 or hex`);
  return key;
}

/** What a sealed field is bound to, e.g. "ecommerce.auth.v1.UserPasswordResetRequested.sealed_token:<user id>". */
export function sealedFieldBinding(typeName: string, field: string, subjectId: string): string {
  return `${typeName}.${field}:${subjectId}`;
}

/** Seals `plaintext` so that only `consumer` (holder of its event key) can open it. */
export function sealForConsumer(consumer: string, plaintext: string, boundTo: string, env: Env = process.env): Uint8Array {
  return new Uint8Array(sealText(eventKey(consumer, env), plaintext, boundTo));
}

/** Opens a value sealed for `service` (this service): throws with another service's key or a moved value. */
export function openSealedField(service: string, sealed: Uint8Array, boundTo: string, env: Env = process.env): string {
  return openText(eventKey(service, env), Buffer.from(sealed), boundTo);
}
