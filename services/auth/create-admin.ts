/**
 * Creates the shop's first admin, or promotes an existing account to admin:
 *
 *   npm run create-admin -- --email admin@shop.example --password 'a long passphrase'
 *
 * It opens the auth database with the service's own configuration
 * (DATABASE_URL etc., migrations applied) and writes through the outbox, so the
 * running Auth service publishes user.registered / user.role_changed as usual.
 * An existing account keeps its password (--password is then optional).
 */
import { parseArgs } from "node:util";
import type { MikroORM } from "@mikro-orm/postgresql";
import { v7 as uuidv7 } from "uuid";
import { SecurityAction } from "../../gen/ecommerce/auth/v1/auth_pb.js";
import { RoleChange, UserRegisteredSchema, UserRoleChangedSchema } from "../../gen/ecommerce/auth/v1/events_pb.js";
import { adminRole, customerRole } from "../../kit/auth/principal.ts";
import { loadConfig } from "../../kit/config.ts";
import { openDatabase } from "../../kit/db.ts";
import { publishEvent } from "../../kit/events/outbox.ts";
import { kitMigrations, OutboxEvent } from "../../kit/events/schema.ts";
import { createLogger } from "../../kit/logger.ts";
import { audit } from "./audit.ts";
import { loadAuthConfig } from "./config.ts";
import { authEntities, Role, User, UserRole } from "./entities.ts";
import { authMigrations } from "./migrations/index.ts";
import { PasswordHasher, weaknessOf } from "./passwords.ts";
import { lockUser, normalizeEmail, rolesOfUser } from "./users.ts";

const usage = "usage: npm run create-admin -- --email <address> [--password <password>]  (the password is required for a new account)";
const reason = "create-admin command";

export type CreateAdminResult = { action: "created" | "promoted" | "unchanged"; userId: string; email: string; isActive: boolean };

export async function createAdmin(orm: MikroORM, hasher: PasswordHasher, rawEmail: string, password: string | undefined): Promise<CreateAdminResult> {
  const email = normalizeEmail(rawEmail);
  if (!/^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(email) || email.length > 254) throw new Error(`"${rawEmail}" is not an email address`);
  const existing = await orm.em.fork().findOne(User, { email });
  let passwordHash: string | undefined;
  if (!existing) {
    if (!password) throw new Error(`no account has the email ${email}: give --password to create it`);
    const length = [...password].length;
    if (length < 12 || length > 128) throw new Error("the password must be 12 to 128 characters");
    const weakness = weaknessOf(password, email);
    if (weakness) throw new Error(`the password ${weakness}`);
    passwordHash = await hasher.hash(password);
  }
  return orm.em.fork().transactional(async (tx) => {
    const [customer, admin] = await Promise.all([tx.findOneOrFail(Role, { name: customerRole }), tx.findOneOrFail(Role, { name: adminRole })]);
    const now = new Date();
    const user = existing ? await lockUser(tx, existing.id) : undefined;
    if (!user) {
      const created = tx.create(User, {
        id: uuidv7(),
        email,
        passwordHash: passwordHash!,
        // Set up by the operator, who vouches for the address.
        emailVerified: true,
        isActive: true,
        failedLoginAttempts: 0,
        lockedUntil: null,
        lastLoginAt: null,
        createdAt: now,
        updatedAt: now,
      });
      tx.persist(created);
      for (const role of [customer, admin]) tx.persist(tx.create(UserRole, { id: uuidv7(), userId: created.id, roleId: role.id, createdAt: now }));
      audit(tx, SecurityAction.REGISTERED, { userId: created.id, metadata: { reason } });
      audit(tx, SecurityAction.ROLE_ASSIGNED, { userId: created.id, metadata: { role: adminRole, reason } });
      publishEvent(tx, UserRegisteredSchema, {
        userId: created.id,
        email,
        firstName: "",
        lastName: "",
        emailVerified: true,
        preferredLanguage: "",
        newsletterSubscribed: false,
        roles: [adminRole, customerRole],
      });
      return { action: "created", userId: created.id, email, isActive: true };
    }
    const roles = await rolesOfUser(tx, user.id);
    if (roles.includes(adminRole)) return { action: "unchanged", userId: user.id, email, isActive: user.isActive };
    tx.persist(tx.create(UserRole, { id: uuidv7(), userId: user.id, roleId: admin.id, createdAt: now }));
    user.updatedAt = now;
    audit(tx, SecurityAction.ROLE_ASSIGNED, { userId: user.id, metadata: { role: adminRole, reason } });
    publishEvent(tx, UserRoleChangedSchema, { userId: user.id, role: adminRole, change: RoleChange.ASSIGNED, roles: [...roles, adminRole].sort(), changedBy: "" });
    return { action: "promoted", userId: user.id, email, isActive: user.isActive };
  });
}

async function run(): Promise<number> {
  let values: { email?: string; password?: string; help?: boolean };
  try {
    ({ values } = parseArgs({ options: { email: { type: "string" }, password: { type: "string" }, help: { type: "boolean" } }, strict: true }));
  } catch (error) {
    console.error(`${(error as Error).message}\n${usage}`);
    return 2;
  }
  if (values.help) {
    console.log(usage);
    return 0;
  }
  if (!values.email) {
    console.error(usage);
    return 2;
  }
  const config = loadConfig("auth", process.env);
  const authConfig = loadAuthConfig(process.env);
  const log = createLogger("auth-create-admin", process.env.LOG_LEVEL ?? "warn");
  const orm = await openDatabase({
    url: config.databaseUrl,
    entities: [OutboxEvent, ...authEntities],
    migrations: [...kitMigrations("event_inbox"), ...authMigrations],
    log,
    poolSize: 2,
  });
  try {
    const result = await createAdmin(orm, new PasswordHasher(authConfig.argon2), values.email, values.password);
    const who = `${result.email} (user id ${result.userId})`;
    if (result.action === "created") console.log(`Created admin account ${who}; roles: admin, customer. Sign in with Login.`);
    else if (result.action === "promoted") console.log(`Promoted ${who} to admin; the password was not changed. The role applies from the next sign-in or token refresh.`);
    else console.log(`${who} is already an admin; nothing changed.`);
    if (result.action !== "created" && values.password) console.log("Note: --password is ignored for an existing account (use the password reset to change it).");
    if (!result.isActive) console.log("Warning: this account is deactivated and cannot sign in until an admin reactivates it (SetUserActive).");
    return 0;
  } finally {
    await orm.close();
  }
}

if (import.meta.main) {
  run().then(
    (code) => process.exit(code),
    (error: unknown) => {
      console.error(`create-admin failed: ${(error as Error).message}`);
      process.exit(1);
    },
  );
}
