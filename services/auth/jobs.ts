/**
 * Auth's background work: the signing key ring (first key, rotation, retired
 * keys dropped) and housekeeping of expired tokens and old audit rows.
 */
import { intervalJob } from "../../kit/jobs.ts";
import type { Job, ServiceContext } from "../../kit/server.ts";
import { sqlOf } from "../../kit/sql.ts";
import type { AuthRuntime } from "./runtime.ts";

const hour = 3_600_000;
/** Audit rows are kept a year (auth.proto SecurityAuditLog). */
const auditRetentionDays = 365;

export function authJobs(rt: AuthRuntime, ctx: ServiceContext): Job[] {
  return [
    intervalJob({ name: "signing-key-rotation", everyMs: rt.config.keys.checkIntervalMs, log: ctx.log, run: () => rt.keys.rotate() }),
    intervalJob({
      name: "token-housekeeping",
      everyMs: hour,
      log: ctx.log,
      async run() {
        const sql = sqlOf(ctx.orm.em.fork());
        // Expired rows prove nothing any more; a day's margin keeps reuse detection around expiry.
        await sql.run("delete from refresh_tokens where expires_at < now() - interval '1 day'");
        await sql.run("delete from password_reset_tokens where expires_at < now() - interval '1 day'");
        await sql.run("delete from email_verification_tokens where expires_at < now() - interval '1 day' and not verified");
        await sql.run("delete from security_audit_logs where created_at < now() - make_interval(days => $1)", [auditRetentionDays]);
      },
    }),
    // Not a loop: closes the rate limits' connection pool before the database goes.
    { name: "rate-limit-store", stop: () => rt.limits.close() },
  ];
}
