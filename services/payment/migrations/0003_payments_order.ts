/**
 * ListPaymentsForOrderInternal reads every payment of an order (failed and
 * cancelled ones too, which payments_live_order does not cover), newest first.
 * Committed: never edit.
 */
import { Migration } from "@mikro-orm/migrations";

export class PaymentsOrder extends Migration {
  override async up(): Promise<void> {
    this.addSql("create index payments_order on payments (order_id, created_at desc, id desc)");
  }
}
