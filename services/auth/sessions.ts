/**
 * Sessions and token pairs. A session starts at sign-in (or Register) and is
 * the chain of refresh tokens rotated from it; its id is the `sid` claim.
 * Refresh tokens and one-time email tokens are 256-bit random strings stored
 * only as SHA-256 hashes (enough for high-entropy secrets: nothing to brute-force).
 */
import { createHash, randomBytes } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import type { EntityManager } from "@mikro-orm/postgresql";
import { v7 as uuidv7 } from "uuid";
import { type TokenPair, TokenPairSchema } from "../../gen/ecommerce/auth/v1/auth_pb.js";
import { serviceRole } from "../../kit/auth/principal.ts";
import { timestampOf } from "../../kit/convert.ts";
import { sqlOf } from "../../kit/sql.ts";
import type { ClientInfo } from "./audit.ts";
import type { User } from "./entities.ts";
import { RefreshToken } from "./entities.ts";
import type { AuthRuntime } from "./runtime.ts";

/** A new secret: 32 random bytes, base64url (43 characters). */
export function newSecret(): string {
  return randomBytes(32).toString("base64url");
}

export function sha256(secret: string): string {
  return createHash("sha256").update(secret, "utf8").digest("hex");
}

/** Signs a user access token with the claims documented on AuthService. */
export function signAccessToken(rt: AuthRuntime, user: User, roles: string[], sessionId: string) {
  return rt.keys.sign(
    { email: user.email, sid: sessionId, roles: [...roles].sort(), email_verified: user.emailVerified },
    user.id,
    rt.config.accessTokenTtlMs,
  );
}

/** Signs a service token: sub "service:<name>", roles ["service"], svc. */
export function signServiceToken(rt: AuthRuntime, service: string) {
  return rt.keys.sign({ roles: [serviceRole], svc: service }, `service:${service}`, rt.config.serviceTokenTtlMs);
}

/**
 * Issues an access token and a new refresh token of `sessionId` (queued in
 * `em`'s unit of work). Returns the pair and the refresh token's row id.
 */
export async function issueTokenPair(
  rt: AuthRuntime,
  em: EntityManager,
  user: User,
  roles: string[],
  sessionId: string,
  client: ClientInfo,
): Promise<{ pair: TokenPair; refreshTokenId: string }> {
  const refreshToken = newSecret();
  const refreshExpiresAt = new Date(Date.now() + rt.config.refreshTokenTtlMs);
  const row = em.create(RefreshToken, {
    id: uuidv7(),
    tokenHash: sha256(refreshToken),
    userId: user.id,
    sessionId,
    expiresAt: refreshExpiresAt,
    revoked: false,
    revokedAt: null,
    revokedReason: null,
    replacedBy: null,
    ipAddress: client.ip,
    userAgent: client.userAgent,
    createdAt: new Date(),
  });
  em.persist(row);
  const access = await signAccessToken(rt, user, roles, sessionId);
  return {
    pair: create(TokenPairSchema, {
      accessToken: access.token,
      accessTokenExpiresAt: timestampOf(access.expiresAt),
      refreshToken,
      refreshTokenExpiresAt: timestampOf(refreshExpiresAt),
      tokenType: "Bearer",
    }),
    refreshTokenId: row.id,
  };
}

/** Starts a new session for a signed-in user. */
export async function startSession(rt: AuthRuntime, em: EntityManager, user: User, roles: string[], client: ClientInfo) {
  const sessionId = uuidv7();
  const { pair } = await issueTokenPair(rt, em, user, roles, sessionId, client);
  return { sessionId, pair };
}

export type RevokeScope = { sessionId: string } | { userId: string; exceptSessionId?: string };

/**
 * Revokes every live refresh token in scope, right away (raw SQL in `em`'s
 * transaction; tokens queued but not yet flushed are not touched). Returns how
 * many sessions that ended (sessions that still had an unexpired token).
 */
export async function revokeSessions(em: EntityManager, scope: RevokeScope, reason: string): Promise<number> {
  const [where, params] =
    "sessionId" in scope
      ? ["session_id = $2", [scope.sessionId]]
      : scope.exceptSessionId
        ? ["user_id = $2 and session_id <> $3", [scope.userId, scope.exceptSessionId]]
        : ["user_id = $2", [scope.userId]];
  const row = await sqlOf(em).one<{ n: number }>(
    `with ended as (
       update refresh_tokens set revoked = true, revoked_at = now(), revoked_reason = $1
        where not revoked and ${where}
        returning session_id, expires_at)
     select count(distinct session_id)::int as n from ended where expires_at > now()`,
    [reason, ...params],
  );
  return row?.n ?? 0;
}

/** Whether a session still has a live refresh token (IntrospectToken). */
export async function sessionActive(em: EntityManager, sessionId: string): Promise<boolean> {
  const row = await sqlOf(em).one("select 1 as one from refresh_tokens where session_id = $1 and not revoked and expires_at > now() limit 1", [sessionId]);
  return row !== undefined;
}
