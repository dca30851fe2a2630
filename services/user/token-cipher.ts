/**
 * Encryption at rest of payment provider tokens: AES-256-GCM with a random
 * 96-bit nonce per token. Stored as nonce || tag || ciphertext plus the key id
 * in its own column. The associated data binds a ciphertext to its payment
 * method and user, so a ciphertext copied onto another row does not decrypt.
 */
import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import type { DataKey } from "./config.ts";

const nonceBytes = 12;
const tagBytes = 16;

export interface SealedToken {
  ciphertext: Buffer;
  keyId: string;
}

export class TokenCipher {
  private readonly current: DataKey;
  private readonly byId: Map<string, Buffer>;

  constructor(current: DataKey, decryptionKeys: DataKey[]) {
    this.current = current;
    this.byId = new Map(decryptionKeys.map((k) => [k.id, k.key]));
    this.byId.set(current.id, current.key);
  }

  seal(token: string, boundTo: string): SealedToken {
    const nonce = randomBytes(nonceBytes);
    const cipher = createCipheriv("aes-256-gcm", this.current.key, nonce, { authTagLength: tagBytes });
    cipher.setAAD(Buffer.from(boundTo, "utf8"));
    const body = Buffer.concat([cipher.update(token, "utf8"), cipher.final()]);
    return { ciphertext: Buffer.concat([nonce, cipher.getAuthTag(), body]), keyId: this.current.id };
  }

  /** Throws when the key is unknown or the ciphertext was tampered with or moved to another row. */
  open(sealed: SealedToken, boundTo: string): string {
    const key = this.byId.get(sealed.keyId);
    if (!key) throw new Error(`payment token encrypted with unknown data key ${sealed.keyId}: add it to USER_DATA_PREVIOUS_KEYS`);
    const nonce = sealed.ciphertext.subarray(0, nonceBytes);
    const tag = sealed.ciphertext.subarray(nonceBytes, nonceBytes + tagBytes);
    const body = sealed.ciphertext.subarray(nonceBytes + tagBytes);
    const decipher = createDecipheriv("aes-256-gcm", key, nonce, { authTagLength: tagBytes });
    decipher.setAAD(Buffer.from(boundTo, "utf8"));
    decipher.setAuthTag(tag);
    return Buffer.concat([decipher.update(body), decipher.final()]).toString("utf8");
  }
}

/** What a payment method's token is bound to (its associated data). */
export function tokenBinding(paymentMethodId: string, userId: string): string {
  return `user_payment_methods.provider_token:${paymentMethodId}:${userId}`;
}
