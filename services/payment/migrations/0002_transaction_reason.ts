/**
 * Why a VOID was asked (VoidPaymentRequest.reason), kept on its
 * payment_transactions row so that reconciliation, which may record a void
 * whose call died, publishes payment.voided with the caller's reason.
 * Committed: never edit.
 */
import { Migration } from "@mikro-orm/migrations";

export class TransactionReason extends Migration {
  override async up(): Promise<void> {
    this.addSql(`alter table payment_transactions
      -- The caller's reason of a VOID (e.g. "order_cancelled"); null for other types.
      add column reason text`);
    this.addSql("create index payment_transactions_pending on payment_transactions (created_at) where status = 'pending' and type <> 'authorize'");
  }
}
