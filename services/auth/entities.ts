/**
 * Auth's entities (tables created by migrations/0001_auth_tables.ts). Foreign
 * keys are plain uuid columns: handlers load what they need explicitly.
 */
import { type InferEntity, defineEntity, p } from "@mikro-orm/postgresql";

export const User = defineEntity({
  name: "User",
  tableName: "users",
  properties: {
    id: p.uuid().primary(),
    /** Lower-cased; unique. */
    email: p.text(),
    /** argon2id, PHC string. */
    passwordHash: p.text(),
    emailVerified: p.boolean().default(false),
    isActive: p.boolean().default(true),
    failedLoginAttempts: p.integer().default(0),
    lockedUntil: p.datetime().nullable(),
    lastLoginAt: p.datetime().nullable(),
    createdAt: p.datetime().onCreate(() => new Date()),
    updatedAt: p
      .datetime()
      .onCreate(() => new Date())
      .onUpdate(() => new Date()),
  },
});
export type User = InferEntity<typeof User>;

export const Role = defineEntity({
  name: "Role",
  tableName: "roles",
  properties: {
    id: p.uuid().primary(),
    name: p.text(),
    description: p.text(),
    createdAt: p.datetime().onCreate(() => new Date()),
    updatedAt: p
      .datetime()
      .onCreate(() => new Date())
      .onUpdate(() => new Date()),
  },
});
export type Role = InferEntity<typeof Role>;

export const UserRole = defineEntity({
  name: "UserRole",
  tableName: "user_roles",
  properties: {
    id: p.uuid().primary(),
    userId: p.uuid(),
    roleId: p.uuid(),
    createdAt: p.datetime().onCreate(() => new Date()),
  },
});
export type UserRole = InferEntity<typeof UserRole>;

export const RefreshToken = defineEntity({
  name: "RefreshToken",
  tableName: "refresh_tokens",
  properties: {
    id: p.uuid().primary(),
    /** SHA-256 (hex) of the opaque token. */
    tokenHash: p.text(),
    userId: p.uuid(),
    /** The session: shared by every token rotated from one sign-in. */
    sessionId: p.uuid(),
    expiresAt: p.datetime(),
    revoked: p.boolean().default(false),
    revokedAt: p.datetime().nullable(),
    /** rotated | logout | reuse_detected | password_changed | password_reset | deactivated | admin_revoked */
    revokedReason: p.text().nullable(),
    /** The token this one was rotated into. */
    replacedBy: p.uuid().nullable(),
    ipAddress: p.text().default(""),
    userAgent: p.text().default(""),
    createdAt: p.datetime().onCreate(() => new Date()),
  },
});
export type RefreshToken = InferEntity<typeof RefreshToken>;

export const PasswordResetToken = defineEntity({
  name: "PasswordResetToken",
  tableName: "password_reset_tokens",
  properties: {
    id: p.uuid().primary(),
    tokenHash: p.text(),
    userId: p.uuid(),
    expiresAt: p.datetime(),
    used: p.boolean().default(false),
    usedAt: p.datetime().nullable(),
    /** Set when a newer reset token made this one stop working. */
    supersededAt: p.datetime().nullable(),
    createdAt: p.datetime().onCreate(() => new Date()),
  },
});
export type PasswordResetToken = InferEntity<typeof PasswordResetToken>;

export const EmailVerificationToken = defineEntity({
  name: "EmailVerificationToken",
  tableName: "email_verification_tokens",
  properties: {
    id: p.uuid().primary(),
    tokenHash: p.text(),
    userId: p.uuid(),
    /** The address the token was sent to. */
    email: p.text(),
    expiresAt: p.datetime(),
    verified: p.boolean().default(false),
    verifiedAt: p.datetime().nullable(),
    supersededAt: p.datetime().nullable(),
    createdAt: p.datetime().onCreate(() => new Date()),
  },
});
export type EmailVerificationToken = InferEntity<typeof EmailVerificationToken>;

export const SecurityAuditLog = defineEntity({
  name: "SecurityAuditLog",
  tableName: "security_audit_logs",
  properties: {
    id: p.uuid().primary(),
    userId: p.uuid().nullable(),
    /** The SecurityAction's name without prefix, lower case ("login_failed"). */
    action: p.text(),
    ipAddress: p.text().default(""),
    userAgent: p.text().default(""),
    metadata: p.json<Record<string, string>>(),
    createdAt: p.datetime().onCreate(() => new Date()),
  },
});
export type SecurityAuditLog = InferEntity<typeof SecurityAuditLog>;

export const SigningKey = defineEntity({
  name: "SigningKey",
  tableName: "signing_keys",
  properties: {
    kid: p.text().primary(),
    algorithm: p.text(),
    publicJwk: p.json<Record<string, string>>(),
    privateKeyEncrypted: p.blob(),
    encryptionKeyFingerprint: p.text(),
    /** When it starts signing; before that it is only published. */
    activatesAt: p.datetime(),
    createdAt: p.datetime().onCreate(() => new Date()),
  },
});
export type SigningKey = InferEntity<typeof SigningKey>;

export const authEntities = [User, Role, UserRole, RefreshToken, PasswordResetToken, EmailVerificationToken, SecurityAuditLog, SigningKey];
