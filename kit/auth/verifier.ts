/**
 * Verifies access tokens (ES256 or EdDSA JWTs) against Auth's public keys. Keys are
 * cached by key id; an unknown `kid` triggers a refresh (rate limited), so key
 * rotation at Auth needs no restart anywhere.
 */
import { type JWK, type JWTPayload, errors as joseErrors, importJWK, jwtVerify, decodeProtectedHeader } from "jose";
import { unauthenticated, unavailable } from "../errors.ts";
import { type Principal, serviceRole, tokenAudience, tokenIssuer } from "./principal.ts";

export type PublicKeySource = () => Promise<JWK[]>;

type VerifyKey = Awaited<ReturnType<typeof importJWK>>;

export interface TokenVerifierOptions {
  /** How long fetched keys are trusted before a refetch, in ms. */
  cacheTtlMs?: number;
  /** Least time between two refetches caused by unknown key ids, in ms. */
  minRefreshIntervalMs?: number;
}

export class TokenVerifier {
  private keys = new Map<string, VerifyKey>();
  private fetchedAt = 0;
  private inflight: Promise<void> | undefined;
  private readonly ttl: number;
  private readonly minInterval: number;

  private readonly source: PublicKeySource;

  constructor(source: PublicKeySource, options: TokenVerifierOptions = {}) {
    this.source = source;
    this.ttl = options.cacheTtlMs ?? 5 * 60_000;
    this.minInterval = options.minRefreshIntervalMs ?? 10_000;
  }

  private async refresh(): Promise<void> {
    this.inflight ??= (async () => {
      try {
        const jwks = await this.source();
        const next = new Map<string, VerifyKey>();
        for (const jwk of jwks) if (jwk.kid) next.set(jwk.kid, await importJWK(jwk, jwk.alg ?? "ES256"));
        this.keys = next;
        this.fetchedAt = Date.now();
      } finally {
        this.inflight = undefined;
      }
    })();
    return this.inflight;
  }

  private async keyFor(kid: string): Promise<VerifyKey> {
    const stale = Date.now() - this.fetchedAt > this.ttl;
    if (stale || (!this.keys.has(kid) && Date.now() - this.fetchedAt > this.minInterval)) {
      try {
        await this.refresh();
      } catch (error) {
        if (this.keys.size === 0) {
          throw unavailable(`cannot verify tokens: Auth's public keys are unreachable (${(error as Error).message})`, "JWKS_UNAVAILABLE", 1000);
        }
      }
    }
    const key = this.keys.get(kid);
    if (!key) throw unauthenticated("the access token is signed with an unknown key", "TOKEN_INVALID");
    return key;
  }

  /**
   * Verified tokens, until they expire: a signature check costs more than the rest of a
   * simple read. Safe because access tokens are immutable and, by design, not revocable
   * before they expire. Bounded; the oldest entries go first.
   */
  private readonly verified = new Map<string, { principal: Principal; expiresAt: number }>();
  private static readonly cacheLimit = 10_000;

  /** Verifies a token and returns its principal; UNAUTHENTICATED when it is bad, expired or forged. */
  async verify(token: string): Promise<Principal> {
    const hit = this.verified.get(token);
    if (hit && hit.expiresAt > Date.now()) return hit.principal;
    if (hit) this.verified.delete(token);
    const { principal, expiresAt } = await this.verifyUncached(token);
    if (this.verified.size >= TokenVerifier.cacheLimit) this.verified.delete(this.verified.keys().next().value!);
    this.verified.set(token, { principal, expiresAt });
    return principal;
  }

  private async verifyUncached(token: string): Promise<{ principal: Principal; expiresAt: number }> {
    let kid: string | undefined;
    try {
      kid = decodeProtectedHeader(token).kid;
    } catch {
      throw unauthenticated("the access token is malformed", "TOKEN_INVALID");
    }
    if (!kid) throw unauthenticated("the access token has no key id", "TOKEN_INVALID");
    const key = await this.keyFor(kid);
    let payload: JWTPayload;
    try {
      // exp and iat are required: a token without an expiry would be valid forever (and cached as such).
      ({ payload } = await jwtVerify(token, key, { issuer: tokenIssuer, audience: tokenAudience, algorithms: ["ES256", "EdDSA"], requiredClaims: ["exp", "iat"] }));
    } catch (error) {
      if (error instanceof joseErrors.JWTExpired) throw unauthenticated("the access token has expired; refresh it", "TOKEN_EXPIRED");
      throw unauthenticated("the access token is invalid", "TOKEN_INVALID");
    }
    return { principal: principalFromClaims(payload, token), expiresAt: payload.exp! * 1000 };
  }
}

/** Maps verified claims (documented on ecommerce.auth.v1.AuthService) to a principal. */
export function principalFromClaims(payload: JWTPayload, token: string): Principal {
  const roles = Array.isArray(payload.roles) ? payload.roles.filter((r): r is string => typeof r === "string") : [];
  if (typeof payload.svc === "string" && roles.includes(serviceRole)) return { kind: "service", service: payload.svc };
  if (typeof payload.sub === "string" && !payload.sub.startsWith("service:")) {
    return { kind: "user", userId: payload.sub, email: typeof payload.email === "string" ? payload.email : "", roles, token };
  }
  throw unauthenticated("the token is not an access token", "TOKEN_INVALID");
}
