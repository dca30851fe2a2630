/**
 * The token signing keys (ES256). Kept in the auth database so every replica
 * signs with the same key; the private half is encrypted at rest with
 * AES-256-GCM under AUTH_KEY_ENCRYPTION_KEY. The first key is created at first
 * start; a successor is created `publishLeadMs` before the current key reaches
 * its rotation age, so verifiers see it in GetJwks before it signs anything.
 * A retired key stays listed until every token it signed has expired.
 */
import { keyFingerprint, openText, sealText } from "../../kit/sealing.ts";
import { type CryptoKey, exportJWK, exportPKCS8, generateKeyPair, importPKCS8, type JWK, SignJWT } from "jose";
import type { MikroORM } from "@mikro-orm/postgresql";
import { v7 as uuidv7 } from "uuid";
import { tokenAudience, tokenIssuer } from "../../kit/auth/principal.ts";
import type { Logger } from "../../kit/logger.ts";
import { sqlOf } from "../../kit/sql.ts";
import type { AuthConfig } from "./config.ts";
import { SigningKey } from "./entities.ts";

const algorithm = "ES256";

interface KeyRecord {
  kid: string;
  publicJwk: JWK;
  activatesAt: number;
  encrypted: Buffer;
  fingerprint: string;
}

export interface SignedToken {
  token: string;
  jti: string;
  issuedAt: Date;
  expiresAt: Date;
}

export { keyFingerprint };

const encrypt = (key: Buffer, kid: string, plaintext: string): Buffer => sealText(key, plaintext, kid);
const decrypt = (key: Buffer, kid: string, sealed: Buffer): string => openText(key, sealed, kid);

export class KeyStore {
  private keys: KeyRecord[] = []; // by activation time, oldest first
  private loadedAt = 0;
  private started: Promise<void> | undefined;
  private readonly privateKeys = new Map<string, Promise<CryptoKey>>();
  private readonly orm: MikroORM;
  private readonly config: AuthConfig;
  private readonly log: Logger;
  private readonly fingerprint: string;

  constructor(orm: MikroORM, config: AuthConfig, log: Logger) {
    this.orm = orm;
    this.config = config;
    this.log = log;
    this.fingerprint = keyFingerprint(config.keys.encryptionKey);
  }

  /** The longest a token signed by a key can live after the key stopped signing. */
  private get retireAfterMs(): number {
    return Math.max(this.config.accessTokenTtlMs, this.config.serviceTokenTtlMs) + this.config.keys.retireGraceMs;
  }

  /** Keys verifiers must know: pending, current, and retired ones whose tokens may still be alive. */
  private listed<T extends { activatesAt: number }>(keys: T[], now: number): T[] {
    return keys.filter((_, i) => {
      const successor = keys[i + 1];
      return !successor || successor.activatesAt > now || successor.activatesAt + this.retireAfterMs > now;
    });
  }

  /** Runs the first rotation check once (creating the first key); retried on the next call after a failure. */
  ready(): Promise<void> {
    this.started ??= this.rotate().catch((error: unknown) => {
      this.started = undefined;
      throw error;
    });
    return this.started;
  }

  /**
   * Creates the first key or the next one when due, drops keys no token can
   * need any more, and reloads. Replicas serialize on an advisory lock.
   */
  async rotate(): Promise<void> {
    const { rotationMs, publishLeadMs } = this.config.keys;
    await this.orm.em.fork().transactional(async (tx) => {
      const sql = sqlOf(tx);
      await sql.all("select pg_advisory_xact_lock(hashtext('auth.signing_keys'))");
      const rows = await sql.all<{ kid: string; activates_at: string }>("select kid, activates_at from signing_keys order by activates_at, kid");
      const keys = rows.map((r) => ({ kid: r.kid, activatesAt: new Date(r.activates_at).getTime() }));
      const now = Date.now();
      const newest = keys.at(-1);
      let activatesAt: number | undefined;
      if (!newest) activatesAt = now;
      else if (newest.activatesAt <= now && now - newest.activatesAt >= rotationMs - publishLeadMs) activatesAt = now + publishLeadMs;
      if (activatesAt !== undefined) {
        const kid = uuidv7();
        const pair = await generateKeyPair(algorithm, { extractable: true });
        const publicJwk = { ...(await exportJWK(pair.publicKey)), kid, alg: algorithm, use: "sig" };
        tx.persist(
          tx.create(SigningKey, {
            kid,
            algorithm,
            publicJwk: publicJwk as unknown as Record<string, string>,
            privateKeyEncrypted: encrypt(this.config.keys.encryptionKey, kid, await exportPKCS8(pair.privateKey)),
            encryptionKeyFingerprint: this.fingerprint,
            activatesAt: new Date(activatesAt),
          }),
        );
        keys.push({ kid, activatesAt });
        this.log.info({ kid, activates_at: new Date(activatesAt).toISOString() }, newest ? "created the next signing key" : "created the first signing key");
      }
      const keep = new Set(this.listed(keys, now).map((k) => k.kid));
      const expired = keys.filter((k) => !keep.has(k.kid)).map((k) => k.kid);
      if (expired.length > 0) {
        await sql.run("delete from signing_keys where kid = any($1::text[])", [expired]);
        this.log.info({ kids: expired }, "removed retired signing keys");
      }
    });
    await this.reload();
  }

  private async reload(): Promise<void> {
    // Read straight into records: GetJwks and every verifier depend on this, no entity is needed.
    const rows = await sqlOf(this.orm.em.fork()).all<{ kid: string; public_jwk: JWK; activates_at: string; private_key_encrypted: Buffer; encryption_key_fingerprint: string }>(
      "select kid, public_jwk, activates_at, private_key_encrypted, encryption_key_fingerprint from signing_keys order by activates_at, kid",
    );
    this.keys = rows.map((r) => ({
      kid: r.kid,
      publicJwk: r.public_jwk,
      activatesAt: new Date(r.activates_at).getTime(),
      encrypted: r.private_key_encrypted,
      fingerprint: r.encryption_key_fingerprint,
    }));
    this.loadedAt = Date.now();
  }

  private async fresh(): Promise<KeyRecord[]> {
    await this.ready();
    // Other replicas may have created a key; the publish lead is far longer than this interval.
    if (Date.now() - this.loadedAt > this.config.keys.checkIntervalMs) await this.reload();
    return this.keys;
  }

  /** The public keys for GetJwks and the verifier, newest first. */
  async publicJwks(): Promise<JWK[]> {
    const keys = await this.fresh();
    return this.listed(keys, Date.now())
      .map((k) => k.publicJwk)
      .reverse();
  }

  private privateKey(key: KeyRecord): Promise<CryptoKey> {
    let pending = this.privateKeys.get(key.kid);
    if (!pending) {
      if (key.fingerprint !== this.fingerprint) {
        throw new Error(
          `signing key ${key.kid} was encrypted with another AUTH_KEY_ENCRYPTION_KEY (fingerprint ${key.fingerprint}, configured ${this.fingerprint})`,
        );
      }
      pending = importPKCS8(decrypt(this.config.keys.encryptionKey, key.kid, key.encrypted), algorithm);
      this.privateKeys.set(key.kid, pending);
    }
    return pending;
  }

  /** Signs a token with the current key: iss, aud, iat, exp, jti and the `kid` header are set here. */
  async sign(claims: Record<string, unknown>, subject: string, ttlMs: number): Promise<SignedToken> {
    const keys = await this.fresh();
    const now = Date.now();
    const current = keys.filter((k) => k.activatesAt <= now).at(-1) ?? keys[0];
    if (!current) throw new Error("no signing key");
    const iat = Math.floor(now / 1000);
    const exp = iat + Math.max(1, Math.round(ttlMs / 1000));
    const jti = uuidv7();
    const token = await new SignJWT(claims)
      .setProtectedHeader({ alg: algorithm, kid: current.kid, typ: "JWT" })
      .setIssuer(tokenIssuer)
      .setAudience(tokenAudience)
      .setSubject(subject)
      .setIssuedAt(iat)
      .setExpirationTime(exp)
      .setJti(jti)
      .sign(await this.privateKey(current));
    return { token, jti, issuedAt: new Date(iat * 1000), expiresAt: new Date(exp * 1000) };
  }
}
