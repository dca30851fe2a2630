/** Auth's committed migrations, in order (never edited once landed). */
import type { MigrationEntry } from "../../../kit/db.ts";
import { AuthTables } from "./0001_auth_tables.ts";
import { RateLimits } from "./0002_rate_limits.ts";

export const authMigrations: MigrationEntry[] = [
  { name: "0001_auth_tables", class: AuthTables },
  { name: "0002_rate_limits", class: RateLimits },
];
