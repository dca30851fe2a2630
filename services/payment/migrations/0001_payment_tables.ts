/**
 * The Payment service's tables (ARCHITECTURE.md payment_db, seed 000): payments,
 * payment_transactions (the log every amount is derived from), refunds,
 * payment_methods (display data of the instruments used, never a token) and
 * payment_webhooks. Committed: never edit, add a new migration instead.
 * Foreign keys are checked at commit (deferred): the entities carry plain ids,
 * so MikroORM does not order a unit of work's inserts by them.
 */
import { Migration } from "@mikro-orm/migrations";

export class PaymentTables extends Migration {
  override async up(): Promise<void> {
    this.addSql(`create table payment_methods (
      id uuid primary key,
      user_id uuid not null,
      type text not null check (type in ('credit_card', 'debit_card', 'paypal')),
      card_brand text,
      last4 text,
      expiry_month int,
      expiry_year int,
      provider text not null,
      -- The provider's reference to the instrument (e.g. a card fingerprint), never a token.
      provider_reference text,
      created_at timestamptz not null default now()
    )`);
    this.addSql(`create table payments (
      id uuid primary key,
      order_id uuid not null,
      order_number text not null,
      user_id uuid not null,
      -- The User service's saved method that was charged; null for a one-time token.
      saved_payment_method_id uuid,
      payment_method_id uuid references payment_methods (id) deferrable initially deferred,
      status text not null check (status in ('pending', 'processing', 'authorized', 'succeeded', 'failed', 'cancelled', 'partially_refunded', 'refunded')),
      provider text not null,
      provider_payment_id text,
      amount_minor bigint not null check (amount_minor > 0),
      currency char(3) not null,
      description text not null,
      metadata jsonb not null default '{}',
      failure_code text,
      failure_message text,
      -- Sequence number of the last provider event applied (webhooks apply in the provider's order).
      provider_sequence bigint not null default 0,
      authorized_at timestamptz,
      authorization_expires_at timestamptz,
      captured_at timestamptz,
      cancelled_at timestamptz,
      processed_at timestamptz,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now()
    )`);
    // An order has at most one live payment.
    this.addSql("create unique index payments_live_order on payments (order_id) where status not in ('failed', 'cancelled')");
    this.addSql("create index payments_user on payments (user_id, created_at desc, id desc)");
    this.addSql("create index payments_unsettled on payments (updated_at) where status in ('pending', 'processing')");
    this.addSql(`create table refunds (
      id uuid primary key,
      payment_id uuid not null references payments (id) deferrable initially deferred,
      order_id uuid not null,
      user_id uuid not null,
      amount_minor bigint not null check (amount_minor > 0),
      currency char(3) not null,
      status text not null check (status in ('pending', 'processing', 'completed', 'failed')),
      reason text not null,
      note text not null default '',
      return_request_id uuid,
      initiated_by text not null,
      provider_refund_id text,
      failure_code text,
      failure_message text,
      metadata jsonb not null default '{}',
      processed_at timestamptz,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now()
    )`);
    this.addSql("create index refunds_payment on refunds (payment_id, created_at)");
    this.addSql(`create table payment_transactions (
      id uuid primary key,
      payment_id uuid not null references payments (id) deferrable initially deferred,
      type text not null check (type in ('authorize', 'capture', 'void', 'refund')),
      status text not null check (status in ('pending', 'succeeded', 'failed')),
      amount_minor bigint not null check (amount_minor >= 0),
      currency char(3) not null,
      refund_id uuid references refunds (id) deferrable initially deferred,
      provider_transaction_id text,
      failure_code text,
      failure_message text,
      provider_response jsonb,
      processed_at timestamptz,
      created_at timestamptz not null default now()
    )`);
    this.addSql("create index payment_transactions_payment on payment_transactions (payment_id, created_at, id)");
    // A payment is captured at most once (a failed capture may be tried again).
    this.addSql("create unique index payment_transactions_one_capture on payment_transactions (payment_id) where type = 'capture' and status <> 'failed'");
    this.addSql(`create table payment_webhooks (
      id uuid primary key,
      provider text not null,
      event_type text not null,
      provider_event_id text not null,
      status text not null check (status in ('pending', 'processed', 'failed', 'ignored')),
      error text,
      payment_id uuid,
      refund_id uuid,
      attempts int not null default 0,
      payload bytea not null,
      processed_at timestamptz,
      created_at timestamptz not null default now(),
      constraint payment_webhooks_event_unique unique (provider, provider_event_id)
    )`);
    this.addSql("create index payment_webhooks_created on payment_webhooks (created_at desc, id desc)");
  }
}
