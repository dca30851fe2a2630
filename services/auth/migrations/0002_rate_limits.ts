/**
 * Counters of the rate limits, shared by every Auth replica (rate-limit.ts). The
 * columns are those rate-limiter-flexible's PostgreSQL store reads and writes
 * (it is told the table exists): one row per limited key, `points` used in the
 * current window, `expire` = end of the window in epoch ms. Rows an hour past
 * their window are deleted by the store.
 */
import { Migration } from "@mikro-orm/migrations";

export class RateLimits extends Migration {
  override async up(): Promise<void> {
    // "if not exists": since kit migration 0000_kit_v3_rate_limits (run first) every service has this table.
    this.addSql(`create table if not exists rate_limits (
      key varchar(255) primary key,
      points integer not null default 0,
      expire bigint
    )`);
    this.addSql("create index if not exists rate_limits_expire on rate_limits (expire)");
  }
}
