/**
 * order_status_history.order_version: the order's version the change produced,
 * so that WatchOrder can resume after a reconnect from the version a client last
 * saw (the changes after it, once each). Rows written before this migration have
 * none: a resume never replays them. Committed: never edit.
 */
import { Migration } from "@mikro-orm/migrations";

export class StatusHistoryVersion extends Migration {
  override async up(): Promise<void> {
    this.addSql("alter table order_status_history add column order_version integer");
    this.addSql("create index order_status_history_order_version on order_status_history (order_id, order_version)");
  }
}
