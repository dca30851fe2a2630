/**
 * Transactions with one extra outcome: "commit, then fail". Some failures must
 * leave a trace although the call fails (a wrong password counts towards the
 * lockout; an expired reservation found at commit time is given back): the
 * work calls `commitThenFail(error)`, what it wrote so far commits, and the
 * call then fails with `error`. Anything else thrown rolls back, as usual.
 */
import type { ConnectError } from "@connectrpc/connect";
import type { EntityManager } from "./db.ts";

class CommitThenFail extends Error {
  readonly error: ConnectError;
  constructor(error: ConnectError) {
    super(error.message);
    this.error = error;
  }
}

/** Inside `transaction`: commit what was done, then fail the call with `error`. */
export function commitThenFail(error: ConnectError): never {
  throw new CommitThenFail(error);
}

/** `em.transactional`, where `commitThenFail(error)` commits and then throws `error`. */
export async function transaction<T>(em: EntityManager, work: (tx: EntityManager) => Promise<T>): Promise<T> {
  const outcome = await em.transactional(async (tx) => {
    try {
      return { value: await work(tx) };
    } catch (error) {
      if (error instanceof CommitThenFail) return { fail: error.error };
      throw error;
    }
  });
  if ("fail" in outcome) throw outcome.fail;
  return outcome.value;
}
