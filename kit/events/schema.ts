/**
 * The kit's infrastructure tables, created in every service's database by the
 * first migration: the outbox, the inbox of processed events, dead letters and
 * idempotency keys.
 */
import { Migration } from "@mikro-orm/migrations";
import { rateLimitsMigration } from "../rate-limit.ts";
import { defineEntity, p } from "@mikro-orm/postgresql";
import type { MigrationEntry } from "../db.ts";

/** An event waiting to be (or already) published; written in the same transaction as the change. */
export const OutboxEvent = defineEntity({
  name: "OutboxEvent",
  tableName: "outbox_events",
  properties: {
    /** The event id: also the Nats-Msg-Id, so JetStream drops a re-publish. */
    id: p.uuid().primary(),
    subject: p.text(),
    eventType: p.text(),
    payload: p.blob(),
    headers: p.json<Record<string, string>>(),
    createdAt: p.datetime().onCreate(() => new Date()),
    publishedAt: p.datetime().nullable(),
    attempts: p.integer().default(0),
    lastError: p.text().nullable(),
  },
});

function infrastructureSql(inboxTable: string): string[] {
  return [
    `create table if not exists outbox_events (
      id uuid primary key,
      subject text not null,
      event_type text not null,
      payload bytea not null,
      headers jsonb not null default '{}',
      created_at timestamptz not null default now(),
      published_at timestamptz,
      attempts int not null default 0,
      last_error text
    )`,
    "create index if not exists outbox_events_unpublished on outbox_events (created_at, id) where published_at is null",
    // The inbox: one row per (event, consumer) processed. Columns follow the seed's user_event_logs.
    `create table if not exists ${inboxTable} (
      id uuid primary key default gen_random_uuid(),
      event_id uuid not null,
      event_type text not null,
      source text not null,
      payload bytea,
      processed boolean not null default false,
      processed_at timestamptz,
      error text,
      created_at timestamptz not null default now(),
      constraint ${inboxTable}_event_source_unique unique (event_id, source)
    )`,
    `create table if not exists dead_letters (
      id uuid primary key,
      event_id uuid not null,
      subject text not null,
      consumer text not null,
      delivery_count int not null,
      last_error text not null,
      payload bytea not null,
      headers jsonb not null default '{}',
      dead_lettered_at timestamptz not null default now(),
      replayed_at timestamptz,
      constraint dead_letters_event_consumer_unique unique (event_id, consumer)
    )`,
    `create table if not exists idempotency_keys (
      scope text not null,
      key text not null,
      request_hash text not null,
      response bytea,
      created_at timestamptz not null default now(),
      completed_at timestamptz,
      expires_at timestamptz not null,
      primary key (scope, key)
    )`,
    "create index if not exists idempotency_keys_expiry on idempotency_keys (expires_at)",
  ];
}

/**
 * Kit v2 (issue 7): dead letters of events that cannot be decoded or carry no
 * event id (identity = Nats-Msg-Id or stream sequence), the relay lease that
 * lets one replica at a time publish without holding row locks, and the
 * indexes the retention jobs delete by.
 */
function eventsV2Sql(inboxTable: string): string[] {
  return [
    "alter table dead_letters alter column event_id drop not null",
    "alter table dead_letters add column if not exists message_key text",
    "alter table dead_letters add column if not exists stream_sequence bigint",
    "update dead_letters set message_key = event_id::text where message_key is null",
    "alter table dead_letters alter column message_key set not null",
    "alter table dead_letters drop constraint if exists dead_letters_event_consumer_unique",
    "alter table dead_letters add constraint dead_letters_message_consumer_unique unique (message_key, consumer)",
    "create index if not exists dead_letters_replayed on dead_letters (replayed_at) where replayed_at is not null",
    `create table if not exists outbox_relay_lease (
      id int primary key check (id = 1),
      holder text,
      expires_at timestamptz not null
    )`,
    "insert into outbox_relay_lease (id, holder, expires_at) values (1, null, '-infinity') on conflict do nothing",
    "create index if not exists outbox_events_published on outbox_events (published_at) where published_at is not null",
    `create index if not exists ${inboxTable}_processed_at on ${inboxTable} (processed_at) where processed`,
  ];
}

/** The kit's migrations, run before every service's own (names sort before "0001_"). */
export function kitMigrations(inboxTable: string): MigrationEntry[] {
  class KitEventsV2 extends Migration {
    override async up(): Promise<void> {
      for (const sql of eventsV2Sql(inboxTable)) this.addSql(sql);
    }
  }
  return [infrastructureMigration(inboxTable), { name: "0000_kit_v2_events", class: KitEventsV2 }, rateLimitsMigration];
}

/** The first migration of every service. */
export function infrastructureMigration(inboxTable: string): MigrationEntry {
  class KitInfrastructure extends Migration {
    override async up(): Promise<void> {
      for (const sql of infrastructureSql(inboxTable)) this.addSql(sql);
    }
  }
  return { name: "0000_kit_infrastructure", class: KitInfrastructure };
}
