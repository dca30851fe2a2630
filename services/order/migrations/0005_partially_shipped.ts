/**
 * The PARTIALLY_SHIPPED status: a first parcel is with the carrier, some units
 * are not shipped yet. The status checks of orders and order_status_history
 * admit it. Committed: never edit.
 */
import { Migration } from "@mikro-orm/migrations";

const statuses = "'pending', 'confirmed', 'processing', 'partially_shipped', 'shipped', 'delivered', 'cancelled', 'refunded', 'payment_failed'";

export class PartiallyShipped extends Migration {
  override async up(): Promise<void> {
    this.addSql("alter table orders drop constraint orders_status_check");
    this.addSql(`alter table orders add constraint orders_status_check check (status in (${statuses}))`);
    this.addSql("alter table order_status_history drop constraint order_status_history_status_check");
    this.addSql(`alter table order_status_history add constraint order_status_history_status_check check (status in (${statuses}))`);
    this.addSql("alter table order_status_history drop constraint order_status_history_previous_status_check");
    this.addSql(`alter table order_status_history add constraint order_status_history_previous_status_check check (previous_status in (${statuses}))`);
  }
}
