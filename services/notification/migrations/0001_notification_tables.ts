/**
 * The Notification service's tables (ARCHITECTURE.md: notifications,
 * email_templates, notification_preferences, notification_logs) plus
 * notification_recipients, the service's copy of each user's address, name
 * and language (from Auth's and User's events), and notification_orders, the
 * order numbers learnt from order.created (shipment events carry none). The inbox
 * notification_event_logs is created by the kit's first migration.
 * Committed: never edit, add a new migration instead.
 */
import { Migration } from "@mikro-orm/migrations";

export class NotificationTables extends Migration {
  override async up(): Promise<void> {
    this.addSql(`create table notification_recipients (
      user_id uuid primary key,
      email text not null,
      first_name text not null default '',
      last_name text not null default '',
      locale text,
      is_active boolean not null default true,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now()
    )`);

    this.addSql(`create table notification_orders (
      order_id uuid primary key,
      order_number text not null,
      user_id uuid not null,
      created_at timestamptz not null default now()
    )`);

    this.addSql(`create table email_templates (
      id uuid primary key,
      name text not null,
      subject text not null,
      body_html text not null default '',
      body_text text not null,
      -- [{name, description, required, sensitive, example}]
      variables jsonb not null default '[]',
      is_active boolean not null default true,
      -- A default a built-in flow needs: never deleted.
      is_builtin boolean not null default false,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now(),
      constraint email_templates_name_unique unique (name)
    )`);

    this.addSql(`create table notifications (
      id uuid primary key,
      user_id uuid,
      -- The seed's type column: the channel.
      channel text not null,
      notification_type text not null,
      template_name text not null,
      recipient text not null default '',
      subject text not null,
      -- Rendered text, sensitive values shown as [redacted].
      body text not null,
      body_html text not null default '',
      status text not null,
      read_at timestamptz,
      metadata jsonb not null default '{}',
      scheduled_at timestamptz,
      sent_at timestamptz,
      delivered_at timestamptz,
      -- One notification per key: "<event id>-<channel>" for flows, the caller's for SendNotification.
      idempotency_key text not null,
      -- Whether the content held sensitive values (then it cannot be resent).
      sensitive boolean not null default false,
      -- The unredacted rendered message while it waits for delivery (AES-256-GCM); erased once final.
      sealed_content bytea,
      attempts integer not null default 0,
      next_attempt_at timestamptz,
      last_error text,
      provider_message_id text,
      resent_from uuid,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now(),
      constraint notifications_idempotency_key_unique unique (idempotency_key),
      constraint notifications_channel_check check (channel in ('email', 'sms', 'push', 'in_app')),
      constraint notifications_status_check check (status in ('pending', 'sent', 'delivered', 'failed', 'bounced'))
    )`);
    this.addSql("create index notifications_user on notifications (user_id, created_at desc, id desc)");
    this.addSql("create index notifications_created on notifications (created_at desc, id desc)");
    this.addSql("create index notifications_due on notifications (next_attempt_at) where status = 'pending'");

    this.addSql(`create table notification_logs (
      id uuid primary key,
      notification_id uuid not null references notifications (id) on delete cascade,
      status text not null,
      provider text not null,
      provider_message_id text,
      error text,
      -- The provider's raw answer (e.g. the SMTP reply), kept in the database only.
      response text,
      attempt integer not null default 1,
      created_at timestamptz not null default now()
    )`);
    this.addSql("create index notification_logs_created on notification_logs (created_at desc, id desc)");
    this.addSql("create index notification_logs_notification on notification_logs (notification_id, created_at desc)");

    this.addSql(`create table notification_preferences (
      id uuid primary key,
      user_id uuid not null,
      notification_type text not null,
      email_enabled boolean not null,
      sms_enabled boolean not null,
      push_enabled boolean not null,
      in_app_enabled boolean not null,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now(),
      constraint notification_preferences_user_type unique (user_id, notification_type),
      constraint notification_preferences_security_email check (notification_type <> 'security' or email_enabled)
    )`);
  }
}
