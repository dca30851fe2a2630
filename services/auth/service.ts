/**
 * The Auth service: accounts, sign-in, sessions, tokens and their keys,
 * email verification, password reset, the security audit log and service
 * credentials (ecommerce.auth.v1.AuthService). It verifies tokens with its own
 * key store and mints its own service token, never calling itself.
 */
import type { HandlerContext } from "@connectrpc/connect";
import { AuthService } from "../../gen/ecommerce/auth/v1/auth_pb.js";
import { file_ecommerce_auth_v1_events } from "../../gen/ecommerce/auth/v1/events_pb.js";
import { RenewingToken } from "../../kit/auth/credentials.ts";
import { requireUser } from "../../kit/auth/principal.ts";
import { clientAddressOf } from "../../kit/client-address.ts";
import { emOf } from "../../kit/db.ts";
import { defineService } from "../../kit/server.ts";
import type { ClientInfo } from "./audit.ts";
import { authEntities } from "./entities.ts";
import { getMe, login, logout, refreshToken, register } from "./handlers/account.ts";
import {
  assignRole,
  getUser,
  listRoles,
  listSecurityAuditLogs,
  listUsers,
  revokeRole,
  revokeUserSessions,
  setUserActive,
  unlockUser,
} from "./handlers/admin.ts";
import { resendVerification, verifyEmail } from "./handlers/email.ts";
import { getJwks, introspectToken, issueServiceToken } from "./handlers/internal.ts";
import { changePassword, requestPasswordReset, resetPassword } from "./handlers/password.ts";
import { authJobs } from "./jobs.ts";
import { authMigrations } from "./migrations/index.ts";
import { createAuthRuntime } from "./runtime.ts";
import { signServiceToken } from "./sessions.ts";

/** The calling client, for rate limits, sessions and the audit log: the kit's address, and the user agent cut to 512 characters. */
function clientOf(ctx: HandlerContext): ClientInfo {
  return { ip: clientAddressOf(ctx), userAgent: (ctx.requestHeader.get("user-agent") ?? "").slice(0, 512) };
}

export const authService = defineService({
  name: "auth",
  entities: authEntities,
  migrations: authMigrations,
  publishes: file_ecommerce_auth_v1_events,
  credentialExempt: ["ecommerce.auth.v1.AuthService/IssueServiceToken"],
  setup: createAuthRuntime,
  publicKeys: (_ctx, rt) => () => rt.keys.publicJwks(),
  // Auth's own service token, signed locally: it never calls itself.
  serviceCredentials: (_ctx, rt) => new RenewingToken(() => signServiceToken(rt, "auth")),
  routes(router, svc, rt) {
    const me = (ctx: HandlerContext) => requireUser(ctx).userId;
    router.service(AuthService, {
      register: (req, ctx) => register(emOf(ctx), rt, clientOf(ctx), req),
      login: (req, ctx) => login(emOf(ctx), rt, clientOf(ctx), req),
      refreshToken: (req, ctx) => refreshToken(emOf(ctx), rt, clientOf(ctx), req),
      logout: (req, ctx) => logout(emOf(ctx), rt, clientOf(ctx), req),
      verifyEmail: (req, ctx) => verifyEmail(emOf(ctx), rt, clientOf(ctx), req),
      resendVerification: (_req, ctx) => resendVerification(emOf(ctx), rt, me(ctx), clientOf(ctx)),
      requestPasswordReset: (req, ctx) => requestPasswordReset(emOf(ctx), rt, clientOf(ctx), req),
      resetPassword: (req, ctx) => resetPassword(emOf(ctx), rt, clientOf(ctx), req),
      changePassword: (req, ctx) => changePassword(emOf(ctx), rt, requireUser(ctx), clientOf(ctx), req),
      getJwks: () => getJwks(rt),
      getMe: (_req, ctx) => getMe(emOf(ctx), me(ctx)),

      // ADMIN: the kit's interceptor enforced the policy; the caller is the acting admin.
      listUsers: (req, ctx) => listUsers(emOf(ctx), req),
      getUser: (req, ctx) => getUser(emOf(ctx), req),
      setUserActive: (req, ctx) => setUserActive(emOf(ctx), me(ctx), clientOf(ctx), req),
      assignRole: (req, ctx) => assignRole(emOf(ctx), me(ctx), clientOf(ctx), req),
      revokeRole: (req, ctx) => revokeRole(emOf(ctx), me(ctx), clientOf(ctx), req),
      listRoles: (_req, ctx) => listRoles(emOf(ctx)),
      listSecurityAuditLogs: (req, ctx) => listSecurityAuditLogs(emOf(ctx), req),
      unlockUser: (req, ctx) => unlockUser(emOf(ctx), me(ctx), clientOf(ctx), req),
      revokeUserSessions: (req, ctx) => revokeUserSessions(emOf(ctx), me(ctx), clientOf(ctx), req),

      // INTERNAL
      issueServiceToken: (req, ctx) => issueServiceToken(emOf(ctx), rt, clientOf(ctx), req),
      // The kit's verifier (fed by Auth's own key store): the one set of token rules of the mesh.
      introspectToken: (req, ctx) => introspectToken(emOf(ctx), svc.verifier, req),
    });
  },
  jobs: (ctx, rt) => authJobs(rt, ctx),
});
