/**
 * Encryption at rest of payment provider tokens: AES-256-GCM with a random
 * 96-bit nonce per token. Stored as nonce || tag || ciphertext plus the key id
 * in its own column. The associated data binds a ciphertext to its payment
 * method and user, so a ciphertext copied onto another row does not decrypt.
 */
import { openText, sealText } from "../../kit/sealing.ts";
import type { DataKey } from "./config.ts";

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
    return { ciphertext: sealText(this.current.key, token, boundTo), keyId: this.current.id };
  }

  /** Throws when the key is unknown or the ciphertext was tampered with or moved to another row. */
  open(sealed: SealedToken, boundTo: string): string {
    const key = this.byId.get(sealed.keyId);
    if (!key) throw new Error(`payment token encrypted with unknown data key ${sealed.keyId}: add it to USER_DATA_PREVIOUS_KEYS`);
    return openText(key, sealed.ciphertext, boundTo);
  }
}

/** What a payment method's token is bound to (its associated data). */
export function tokenBinding(paymentMethodId: string, userId: string): string {
  return `user_payment_methods.provider_token:${paymentMethodId}:${userId}`;
}
