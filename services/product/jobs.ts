/**
 * Background work: the reservation sweeper gives the units of expired
 * reservations back (status EXPIRED), one reservation per transaction, every
 * RESERVATION_SWEEP_INTERVAL_MS. Replicas share the work (SKIP LOCKED).
 */
import { intervalJob } from "../../kit/jobs.ts";
import type { Job, ServiceContext } from "../../kit/server.ts";
import type { ProductServiceConfig } from "./config.ts";
import { expireOneDue } from "./reservations.ts";

/** Reservations given back per run at most, so one run never holds the loop for long. */
const maxPerRun = 500;

export function reservationSweeper(ctx: ServiceContext, config: ProductServiceConfig): Job {
  return intervalJob({
    name: "reservation-sweeper",
    everyMs: config.sweepIntervalMs,
    log: ctx.log,
    async run(signal) {
      let expired = 0;
      while (!signal.aborted && expired < maxPerRun && (await expireOneDue(ctx.orm.em.fork()))) expired++;
      if (expired > 0) ctx.log.info({ expired }, "expired stock reservations given back");
    },
  });
}
