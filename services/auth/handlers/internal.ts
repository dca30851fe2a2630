/** The public key set, service tokens and token introspection. */
import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import type { EntityManager } from "@mikro-orm/postgresql";
import { decodeJwt, type JWTPayload } from "jose";
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
import type { Principal } from "../../../kit/auth/principal.ts";
import type { TokenVerifier } from "../../../kit/auth/verifier.ts";
import { timestampOf } from "../../../kit/convert.ts";
import { unauthenticated } from "../../../kit/errors.ts";
import { commitThenFail, transaction } from "../../../kit/transaction.ts";
import { audit, type ClientInfo } from "../audit.ts";
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

export async function issueServiceToken(em: EntityManager, rt: AuthRuntime, client: ClientInfo, req: IssueServiceTokenRequest): Promise<IssueServiceTokenResponse> {
  // Each check is an argon2id hash: limited per caller address like the public RPCs.
  await enforceRateLimit(rt.limits, { ip: client.ip });
  const ok = await rt.services.check(req.serviceName, req.serviceSecret);
  // A denial is audited too: its row commits, then the call fails.
  await transaction(em, async (tx) => {
    audit(tx, ok ? SecurityAction.SERVICE_TOKEN_ISSUED : SecurityAction.SERVICE_TOKEN_DENIED, { client, metadata: { service_name: req.serviceName } });
    if (!ok) commitThenFail(unauthenticated("unknown service or wrong service secret", "INVALID_SERVICE_CREDENTIALS"));
  });
  const signed = await signServiceToken(rt, req.serviceName);
  return create(IssueServiceTokenResponseSchema, {
    accessToken: signed.token,
    expiresAt: timestampOf(signed.expiresAt),
    expiresIn: durationFromMs(signed.expiresAt.getTime() - signed.issuedAt.getTime()),
    tokenType: "Bearer",
  });
}

/**
 * The principal and claims of one of our tokens, verified by the kit's TokenVerifier
 * (the one set of rules of the mesh: signature, issuer, audience, exp and iat required);
 * undefined when it is forged, expired or not an access token.
 */
async function verifiedToken(verifier: TokenVerifier, token: string): Promise<{ principal: Principal; payload: JWTPayload } | undefined> {
  try {
    const principal = await verifier.verify(token);
    // Verified just now: reading its claims is safe.
    return { principal, payload: decodeJwt(token) };
  } catch (error) {
    // A bad token is an answer (inactive); keys that cannot be read are an outage, reported as such.
    if (error instanceof ConnectError && error.code === Code.Unauthenticated) return undefined;
    throw error;
  }
}

export async function introspectToken(em: EntityManager, verifier: TokenVerifier, req: IntrospectTokenRequest): Promise<IntrospectTokenResponse> {
  const inactive = create(IntrospectTokenResponseSchema, { active: false });
  const verified = await verifiedToken(verifier, req.token);
  if (!verified) return inactive;
  const { principal, payload } = verified;
  const common = {
    subject: payload.sub ?? "",
    roles: principal.kind === "user" ? principal.roles : ["service"],
    tokenId: payload.jti ?? "",
    issuedAt: timestampOf(new Date(payload.iat! * 1000)),
    expiresAt: timestampOf(new Date(payload.exp! * 1000)),
  };
  if (principal.kind === "service") {
    return create(IntrospectTokenResponseSchema, {
      active: true,
      claims: create(TokenClaimsSchema, { ...common, kind: TokenKind.SERVICE, serviceName: principal.service }),
    });
  }
  // Beyond signature and expiry: the user is still active and the session not revoked.
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
