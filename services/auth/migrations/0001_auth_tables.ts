/**
 * Auth's tables: the seven of the seed (users, roles, user_roles,
 * refresh_tokens, password_reset_tokens, email_verification_tokens,
 * security_audit_logs) plus signing_keys. Every token column holds a SHA-256
 * hash, never the token. The roles "customer" and "admin" are created here.
 * Foreign keys are checked at commit (deferred): the ORM's unit of work, which
 * knows no relations between these entities, may insert children first.
 */
import { Migration } from "@mikro-orm/migrations";

export class AuthTables extends Migration {
  override async up(): Promise<void> {
    this.addSql(`create table users (
      id uuid primary key,
      email text not null,
      password_hash text not null,
      email_verified boolean not null default false,
      is_active boolean not null default true,
      failed_login_attempts int not null default 0,
      locked_until timestamptz,
      last_login_at timestamptz,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now(),
      constraint users_email_lower check (email = lower(email)),
      constraint users_failed_login_attempts_nonnegative check (failed_login_attempts >= 0)
    )`);
    this.addSql("create unique index users_email_unique on users (email)");
    this.addSql("create index users_created_at on users (created_at desc, id desc)");
    this.addSql("create index users_last_login_at on users (last_login_at desc nulls last, id desc)");
    this.addSql("create index users_locked_until on users (locked_until) where locked_until is not null");

    this.addSql(`create table roles (
      id uuid primary key,
      name text not null,
      description text not null default '',
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now(),
      constraint roles_name_unique unique (name),
      constraint roles_name_format check (name ~ '^[a-z][a-z0-9_]{1,49}$')
    )`);
    this.addSql(`insert into roles (id, name, description) values
      ('0190a000-0000-7000-8000-000000000001', 'customer', 'Every registered user: may use the shop for their own account.'),
      ('0190a000-0000-7000-8000-000000000002', 'admin', 'Shop staff: may call every ADMIN RPC of the mesh, on anybody''s data.')`);

    this.addSql(`create table user_roles (
      id uuid primary key,
      user_id uuid not null references users (id) on delete cascade deferrable initially deferred,
      role_id uuid not null references roles (id) on delete restrict deferrable initially deferred,
      created_at timestamptz not null default now(),
      constraint user_roles_user_role_unique unique (user_id, role_id)
    )`);
    this.addSql("create index user_roles_role on user_roles (role_id)");

    // One row per refresh token; a session is the chain of tokens rotated from one sign-in.
    this.addSql(`create table refresh_tokens (
      id uuid primary key,
      token_hash text not null,
      user_id uuid not null references users (id) on delete cascade deferrable initially deferred,
      session_id uuid not null,
      expires_at timestamptz not null,
      revoked boolean not null default false,
      revoked_at timestamptz,
      revoked_reason text,
      replaced_by uuid,
      ip_address text not null default '',
      user_agent text not null default '',
      created_at timestamptz not null default now(),
      constraint refresh_tokens_token_hash_unique unique (token_hash),
      constraint refresh_tokens_revoked_consistent check (revoked = (revoked_at is not null))
    )`);
    this.addSql("create index refresh_tokens_session on refresh_tokens (session_id)");
    this.addSql("create index refresh_tokens_user_live on refresh_tokens (user_id) where not revoked");
    this.addSql("create index refresh_tokens_expiry on refresh_tokens (expires_at)");

    this.addSql(`create table password_reset_tokens (
      id uuid primary key,
      token_hash text not null,
      user_id uuid not null references users (id) on delete cascade deferrable initially deferred,
      expires_at timestamptz not null,
      used boolean not null default false,
      used_at timestamptz,
      superseded_at timestamptz,
      created_at timestamptz not null default now(),
      constraint password_reset_tokens_token_hash_unique unique (token_hash)
    )`);
    this.addSql("create index password_reset_tokens_user on password_reset_tokens (user_id, created_at desc)");

    this.addSql(`create table email_verification_tokens (
      id uuid primary key,
      token_hash text not null,
      user_id uuid not null references users (id) on delete cascade deferrable initially deferred,
      email text not null,
      expires_at timestamptz not null,
      verified boolean not null default false,
      verified_at timestamptz,
      superseded_at timestamptz,
      created_at timestamptz not null default now(),
      constraint email_verification_tokens_token_hash_unique unique (token_hash)
    )`);
    this.addSql("create index email_verification_tokens_user on email_verification_tokens (user_id, created_at desc)");

    // Append-only: rows are never updated; user_id is empty for unknown emails and services.
    this.addSql(`create table security_audit_logs (
      id uuid primary key,
      user_id uuid references users (id) on delete set null deferrable initially deferred,
      action text not null,
      ip_address text not null default '',
      user_agent text not null default '',
      metadata jsonb not null default '{}',
      created_at timestamptz not null default now()
    )`);
    this.addSql("create index security_audit_logs_created on security_audit_logs (created_at desc, id desc)");
    this.addSql("create index security_audit_logs_user on security_audit_logs (user_id, created_at desc, id desc)");
    this.addSql("create index security_audit_logs_action on security_audit_logs (action, created_at desc)");

    // Token signing keys: the private half is AES-256-GCM encrypted (iv | tag | ciphertext, kid as AAD).
    this.addSql(`create table signing_keys (
      kid text primary key,
      algorithm text not null,
      public_jwk jsonb not null,
      private_key_encrypted bytea not null,
      encryption_key_fingerprint text not null,
      activates_at timestamptz not null,
      created_at timestamptz not null default now()
    )`);
    this.addSql("create index signing_keys_activates_at on signing_keys (activates_at desc)");
  }
}
