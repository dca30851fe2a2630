/**
 * The Auth service: accounts, sign-in, sessions, tokens and their keys,
 * email verification, password reset, the security audit log and service
 * credentials (ecommerce.auth.v1.AuthService). It verifies tokens with its own
 * key store and mints its own service token, never calling itself.
 */
import { AuthService } from "../../gen/ecommerce/auth/v1/auth_pb.js";
import { file_ecommerce_auth_v1_events } from "../../gen/ecommerce/auth/v1/events_pb.js";
import { RenewingToken } from "../../kit/auth/credentials.ts";
import { defineService } from "../../kit/server.ts";
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
  routes(router, _ctx, rt) {
    router.service(AuthService, {
      register: (req, hc) => register(rt, req, hc),
      login: (req, hc) => login(rt, req, hc),
      refreshToken: (req, hc) => refreshToken(rt, req, hc),
      logout: (req, hc) => logout(rt, req, hc),
      verifyEmail: (req, hc) => verifyEmail(rt, req, hc),
      resendVerification: (_req, hc) => resendVerification(rt, hc),
      requestPasswordReset: (req, hc) => requestPasswordReset(rt, req, hc),
      resetPassword: (req, hc) => resetPassword(rt, req, hc),
      changePassword: (req, hc) => changePassword(rt, req, hc),
      getJwks: () => getJwks(rt),
      getMe: (_req, hc) => getMe(rt, hc),
      listUsers: (req, hc) => listUsers(req, hc),
      getUser: (req, hc) => getUser(req, hc),
      setUserActive: (req, hc) => setUserActive(req, hc),
      assignRole: (req, hc) => assignRole(req, hc),
      revokeRole: (req, hc) => revokeRole(req, hc),
      listRoles: (_req, hc) => listRoles(hc),
      listSecurityAuditLogs: (req, hc) => listSecurityAuditLogs(req, hc),
      unlockUser: (req, hc) => unlockUser(req, hc),
      revokeUserSessions: (req, hc) => revokeUserSessions(req, hc),
      issueServiceToken: (req, hc) => issueServiceToken(rt, req, hc),
      introspectToken: (req, hc) => introspectToken(rt, req, hc),
    });
  },
  jobs: (ctx, rt) => authJobs(rt, ctx),
});
