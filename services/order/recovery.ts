/**
 * The checkout recovery job: finds checkouts whose lease lapsed (the process
 * driving them died, a peer did not answer, or an asynchronous payment is
 * still to settle), takes each over with a conditional UPDATE of its lease
 * (so of several replicas one drives it), and drives it without the live
 * call (checkout.ts `drive`):
 * - a compensation in progress is finished;
 * - an authorization on record (or a saved-method one, sent again with the
 *   same key) is followed: authorized -> the checkout is finished (stock
 *   committed, cart converted, CONFIRMED); declined -> compensated
 *   (PAYMENT_FAILED); still processing -> looked at again at the next pass,
 *   voided and compensated once the checkout timeout passed;
 * - a checkout that never reached the payment is discarded with every
 *   compensation once ORDER_CHECKOUT_TIMEOUT_MS old (a retry with the same
 *   key resumes it before that); an AuthorizePayment sent whose answer was
 *   never recorded is looked up by order id (Payment
 *   ListPaymentsForOrderInternal) and its live payment voided (compensate).
 */
import type { EntityManager } from "../../kit/db.ts";
import type { Logger } from "../../kit/logger.ts";
import { sqlOf } from "../../kit/sql.ts";
import { type CheckoutDeps, drive } from "./checkout.ts";

export async function recoverCheckouts(fork: () => EntityManager, deps: CheckoutDeps, log: Logger, signal: AbortSignal): Promise<number> {
  const stale = await sqlOf(fork()).all<{ id: string }>(
    "select id from orders where checkout = 'running' and lease_until < now() order by lease_until limit 50",
  );
  let handled = 0;
  for (const { id } of stale) {
    if (signal.aborted) break;
    const em = fork();
    const taken = await sqlOf(em).run(
      "update orders set lease_until = now() + ($2 * interval '1 millisecond') where id = $1 and checkout = 'running' and lease_until < now()",
      [id, deps.config.leaseMs],
    );
    if (taken === 0) continue;
    try {
      await drive(em, deps, id);
    } catch (error) {
      log.info({ orderId: id, err: (error as Error).message }, "checkout recovery pass ended with an error");
    }
    // Still running (payment processing, peer down, not yet expired): released, so a retry with the
    // same key takes it over at once; the job looks again at its next pass.
    await sqlOf(em).run("update orders set lease_until = now() where id = $1 and checkout = 'running'", [id]);
    handled++;
  }
  return handled;
}
