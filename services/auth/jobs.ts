/**
 * Auth's background work: the signing key ring (first key, rotation, retired
 * keys dropped) and housekeeping of expired tokens and old audit rows.
 */
import type { Job, ServiceContext } from "../../kit/server.ts";
import type { AuthRuntime } from "./runtime.ts";
import { query } from "./users.ts";

const hour = 3_600_000;
/** Audit rows are kept a year (auth.proto SecurityAuditLog). */
const auditRetentionDays = 365;

function every(name: string, intervalMs: number, ctx: ServiceContext, work: () => Promise<void>): Job {
  let running: Promise<void> | undefined;
  const tick = () => {
    if (running) return;
    running = work()
      .catch((error: unknown) => ctx.log.warn({ job: name, err: (error as Error).message }, "job run failed; retrying at the next interval"))
      .finally(() => {
        running = undefined;
      });
  };
  tick();
  const timer = setInterval(tick, intervalMs);
  timer.unref();
  return {
    name,
    async stop() {
      clearInterval(timer);
      await running;
    },
  };
}

export function authJobs(rt: AuthRuntime, ctx: ServiceContext): Job[] {
  return [
    every("signing-key-rotation", rt.config.keys.checkIntervalMs, ctx, () => rt.keys.rotate()),
    every("token-housekeeping", hour, ctx, async () => {
      const em = ctx.orm.em.fork();
      // Expired rows prove nothing any more; a day's margin keeps reuse detection around expiry.
      await query(em, "delete from refresh_tokens where expires_at < now() - interval '1 day'");
      await query(em, "delete from password_reset_tokens where expires_at < now() - interval '1 day'");
      await query(em, "delete from email_verification_tokens where expires_at < now() - interval '1 day' and not verified");
      await query(em, `delete from security_audit_logs where created_at < now() - interval '${auditRetentionDays} days'`);
    }),
    // Not a loop: closes the rate limits' connection pool before the database goes.
    { name: "rate-limit-store", stop: () => rt.limits.close() },
  ];
}
