/**
 * Indexes for ListOrders' filters at millions of orders (scripts/bench/orders-explain.ts):
 * without them a status, payment status or order number filter that matches few orders
 * makes the list's count (up to 10001 matches) read the whole table, and an order number
 * prefix makes the page itself scan every order. (status | payment_status, created_at
 * desc, id desc) also gives the commonest back-office view, one status newest first, in
 * index order. The status ones are partial on ListOrders' own condition (orders.ts
 * `backOffice`, the same text, which is how PostgreSQL matches them), so a count by status
 * is an index-only scan and the checkouts the back office never lists are not indexed.
 * Committed: never edit.
 */
import { Migration } from "@mikro-orm/migrations";

const listed = "(announced or status = 'payment_failed' or payment_id is not null)";

export class OrderListIndexes extends Migration {
  override async up(): Promise<void> {
    this.addSql(`create index orders_status_created on orders (status, created_at desc, id desc) where ${listed}`);
    this.addSql(`create index orders_payment_status_created on orders (payment_status, created_at desc, id desc) where ${listed}`);
    // `upper(order_number) like 'PREFIX%'`, whatever the database's collation. Not partial:
    // the planner estimates the prefix's share from an expression index's statistics only
    // when the index is not partial (without them it guesses, and reads orders_created).
    this.addSql("create index orders_number_prefix on orders (upper(order_number) text_pattern_ops)");
  }
}
