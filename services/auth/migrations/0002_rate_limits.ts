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
    this.addSql(`create table rate_limits (
      key varchar(255) primary key,
      points integer not null default 0,
      expire bigint
    )`);
    this.addSql("create index rate_limits_expire on rate_limits (expire)");
  }
}
