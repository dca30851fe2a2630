/** Auth's committed migrations, in order (never edited once landed). */
import type { MigrationEntry } from "../../../kit/db.ts";
import { AuthTables } from "./0001_auth_tables.ts";

export const authMigrations: MigrationEntry[] = [{ name: "0001_auth_tables", class: AuthTables }];
