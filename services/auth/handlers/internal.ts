/** The public key set, service tokens and token introspection. */
import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import type { HandlerContext } from "@connectrpc/connect";
import { decodeProtectedHeader, importJWK, type JWTPayload, jwtVerify } from "jose";
import {
  type GetJwksResponse,
  GetJwksResponseSchema,
  type IntrospectTokenRequest,
  type IntrospectTokenResponse,
  IntrospectTokenResponseSchema,
  type IssueServiceTokenRequest,
  type IssueServiceTokenResponse,
  IssueServiceTokenResponseSchema,
  JsonWebKeySchema,
  SecurityAction,
  TokenClaimsSchema,
  TokenKind,
} from "../../../gen/ecommerce/auth/v1/auth_pb.js";
import { tokenAudience, tokenIssuer } from "../../../kit/auth/principal.ts";
import { principalFromClaims } from "../../../kit/auth/verifier.ts";
import { timestampOf } from "../../../kit/convert.ts";
import { emOf } from "../../../kit/db.ts";
import { unauthenticated } from "../../../kit/errors.ts";
import { audit, clientOf } from "../audit.ts";
import { User } from "../entities.ts";
import { enforceRateLimit } from "../rate-limit.ts";
import type { AuthRuntime } from "../runtime.ts";
import { sessionActive, signServiceToken } from "../sessions.ts";

export async function getJwks(rt: AuthRuntime): Promise<GetJwksResponse> {
  const keys = await rt.keys.publicJwks();
  return create(GetJwksResponseSchema, {
    keys: keys.map((k) =>
      create(JsonWebKeySchema, {
        kid: k.kid ?? "",
        kty: k.kty ?? "",
        crv: k.crv ?? "",
        alg: k.alg ?? "",
        use: k.use ?? "sig",
        x: k.x ?? "",
        y: k.y ?? "",
        n: k.n ?? "",
        e: k.e ?? "",
      }),
    ),
  });
}

export async function issueServiceToken(rt: AuthRuntime, req: IssueServiceTokenRequest, ctx: HandlerContext): Promise<IssueServiceTokenResponse> {
  const client = clientOf(ctx);
  // Each check is an argon2id hash: limited per caller address like the public RPCs.
  await enforceRateLimit(rt.limits, { ip: client.ip });
  const ok = await rt.services.check(req.serviceName, req.serviceSecret);
  await emOf(ctx).transactional(async (tx) =>
    audit(tx, ok ? SecurityAction.SERVICE_TOKEN_ISSUED : SecurityAction.SERVICE_TOKEN_DENIED, { client, metadata: { service_name: req.serviceName } }),
  );
  if (!ok) throw unauthenticated("unknown service or wrong service secret", "INVALID_SERVICE_CREDENTIALS");
  const signed = await signServiceToken(rt, req.serviceName);
  return create(IssueServiceTokenResponseSchema, {
    accessToken: signed.token,
    expiresAt: timestampOf(signed.expiresAt),
    expiresIn: durationFromMs(signed.expiresAt.getTime() - signed.issuedAt.getTime()),
    tokenType: "Bearer",
  });
}

/** The verified payload of one of our tokens, or undefined when it is forged, expired or not ours. */
async function verifiedClaims(rt: AuthRuntime, token: string): Promise<JWTPayload | undefined> {
  try {
    const { kid } = decodeProtectedHeader(token);
    const jwk = (await rt.keys.publicJwks()).find((k) => k.kid === kid);
    if (!jwk) return undefined;
    const { payload } = await jwtVerify(token, await importJWK(jwk, "ES256"), { issuer: tokenIssuer, audience: tokenAudience, algorithms: ["ES256"] });
    return payload;
  } catch {
    return undefined;
  }
}

export async function introspectToken(rt: AuthRuntime, req: IntrospectTokenRequest, ctx: HandlerContext): Promise<IntrospectTokenResponse> {
  const inactive = create(IntrospectTokenResponseSchema, { active: false });
  const payload = await verifiedClaims(rt, req.token);
  if (!payload) return inactive;
  let principal;
  try {
    principal = principalFromClaims(payload, req.token);
  } catch {
    return inactive;
  }
  const common = {
    subject: payload.sub ?? "",
    roles: principal.kind === "user" ? principal.roles : ["service"],
    tokenId: payload.jti ?? "",
    issuedAt: payload.iat !== undefined ? timestampOf(new Date(payload.iat * 1000)) : undefined,
    expiresAt: payload.exp !== undefined ? timestampOf(new Date(payload.exp * 1000)) : undefined,
  };
  if (principal.kind === "service") {
    return create(IntrospectTokenResponseSchema, {
      active: true,
      claims: create(TokenClaimsSchema, { ...common, kind: TokenKind.SERVICE, serviceName: principal.service }),
    });
  }
  // Beyond signature and expiry: the user is still active and the session not revoked.
  const em = emOf(ctx);
  const sid = typeof payload.sid === "string" ? payload.sid : "";
  const user = await em.findOne(User, { id: principal.userId });
  if (!user || !user.isActive || !sid || !(await sessionActive(em, sid))) return inactive;
  return create(IntrospectTokenResponseSchema, {
    active: true,
    claims: create(TokenClaimsSchema, {
      ...common,
      kind: TokenKind.USER,
      userId: principal.userId,
      emailVerified: payload.email_verified === true,
      sessionId: sid,
    }),
  });
}
