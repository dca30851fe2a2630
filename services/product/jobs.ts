/**
 * Background work: the reservation sweeper gives the units of expired
 * reservations back (status EXPIRED), one reservation per transaction, every
 * RESERVATION_SWEEP_INTERVAL_MS. Replicas share the work (SKIP LOCKED).
 */
import type { Job, ServiceContext } from "../../kit/server.ts";
import type { ProductServiceConfig } from "./config.ts";
import { expireOneDue } from "./reservations.ts";

/** Reservations given back per run at most, so one run never holds the loop for long. */
const maxPerRun = 500;

export function reservationSweeper(ctx: ServiceContext, config: ProductServiceConfig): Job {
  let running: Promise<void> | undefined;
  let stopped = false;
  const run = async () => {
    let expired = 0;
    while (!stopped && expired < maxPerRun && (await expireOneDue(ctx.orm.em.fork()))) expired++;
    if (expired > 0) ctx.log.info({ expired }, "expired stock reservations given back");
  };
  const tick = () => {
    if (running || stopped) return;
    running = run()
      .catch((error: unknown) => ctx.log.warn({ job: "reservation-sweeper", err: (error as Error).message }, "sweep failed; retrying at the next interval"))
      .finally(() => {
        running = undefined;
      });
  };
  const timer = setInterval(tick, config.sweepIntervalMs);
  timer.unref();
  tick();
  return {
    name: "reservation-sweeper",
    async stop() {
      stopped = true;
      clearInterval(timer);
      await running;
    },
  };
}
