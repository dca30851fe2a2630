/**
 * Encryption at rest, one way for every service: AES-256-GCM with a random
 * 96-bit nonce, stored as nonce || tag || ciphertext. The associated data binds
 * a sealed value to where it belongs (a row, a key id), so a ciphertext copied
 * elsewhere does not open. Keys are 32 bytes and named by their fingerprint.
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes } from "node:crypto";

const nonceBytes = 12;
const tagBytes = 16;

export function sealText(key: Buffer, plaintext: string, boundTo: string): Buffer {
  const nonce = randomBytes(nonceBytes);
  const cipher = createCipheriv("aes-256-gcm", key, nonce, { authTagLength: tagBytes });
  cipher.setAAD(Buffer.from(boundTo, "utf8"));
  const body = Buffer.concat([cipher.update(plaintext, "utf8"), cipher.final()]);
  return Buffer.concat([nonce, cipher.getAuthTag(), body]);
}

/** Throws when the key is wrong, or the value was tampered with or moved. */
export function openText(key: Buffer, sealed: Buffer, boundTo: string): string {
  const decipher = createDecipheriv("aes-256-gcm", key, sealed.subarray(0, nonceBytes), { authTagLength: tagBytes });
  decipher.setAAD(Buffer.from(boundTo, "utf8"));
  decipher.setAuthTag(sealed.subarray(nonceBytes, nonceBytes + tagBytes));
  return Buffer.concat([decipher.update(sealed.subarray(nonceBytes + tagBytes)), decipher.final()]).toString("utf8");
}

/** A key's public name: a truncated SHA-256 (not reversible), so a name never disagrees with its key. */
export function keyFingerprint(key: Buffer, purpose = ""): string {
  return createHash("sha256").update(purpose).update(key).digest("hex").slice(0, 16);
}
