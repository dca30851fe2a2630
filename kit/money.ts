/**
 * Money as the contracts carry it: integer minor units (bigint) plus an ISO 4217
 * code. Database columns hold bigint minor units, which arrive as strings through
 * raw SQL; these build the contract message from them, never through a float.
 */
import { create } from "@bufbuild/protobuf";
import { type Money, MoneySchema } from "../gen/ecommerce/common/v1/money_pb.js";

export type { Money };

export function money(amountMinor: bigint | string | number, currency: string): Money {
  if (typeof amountMinor === "number" && !Number.isSafeInteger(amountMinor)) {
    throw new Error(`money amounts are integer minor units, got ${amountMinor}`);
  }
  return create(MoneySchema, { amountMinor: BigInt(amountMinor), currencyCode: currency });
}

/** `money(...)`, or undefined when the amount (or the currency) is absent. */
export function moneyOrUndefined(amountMinor: bigint | string | number | null | undefined, currency: string | null | undefined): Money | undefined {
  return amountMinor === null || amountMinor === undefined || !currency ? undefined : money(amountMinor, currency);
}
