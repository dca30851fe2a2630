/**
 * Contract enums to database values and back, declared once per enum as pairs.
 * The database keeps readable strings (its CHECK constraints list them); the
 * zero value (`*_UNSPECIFIED`) has no database value: it means "not set", which
 * is NULL in an optional column and an error in a required one.
 */
import { CardBrand, PaymentMethodType } from "../gen/ecommerce/common/v1/payment_method_pb.js";

export interface DbEnum<E extends number> {
  /** The database value of a set enum; throws for UNSPECIFIED or an unknown number (a bug, validation refuses those). */
  toDb(value: E): string;
  /** The enum of a database value; throws for a value the contract does not know (a bug or a migration ahead of the code). */
  fromDb(value: string): E;
  /** For optional columns: UNSPECIFIED becomes null. */
  toDbOrNull(value: E): string | null;
  /** For optional columns: null becomes UNSPECIFIED (0). */
  fromDbOrUnspecified(value: string | null | undefined): E;
  /** Every database value, in declaration order (for `= any($1)` filters and checks). */
  readonly dbValues: readonly string[];
}

export function dbEnum<E extends number>(pairs: readonly (readonly [E, string])[]): DbEnum<E> {
  const toDb = new Map<E, string>(pairs);
  const fromDb = new Map<string, E>(pairs.map(([e, s]) => [s, e]));
  const mapping: DbEnum<E> = {
    toDb(value) {
      const s = toDb.get(value);
      if (s === undefined) throw new Error(`no database value for enum number ${value}`);
      return s;
    },
    fromDb(value) {
      const e = fromDb.get(value);
      if (e === undefined) throw new Error(`unknown database value "${value}"`);
      return e;
    },
    toDbOrNull: (value) => (value === 0 ? null : mapping.toDb(value)),
    fromDbOrUnspecified: (value) => (value === null || value === undefined || value === "" ? (0 as E) : mapping.fromDb(value)),
    dbValues: pairs.map(([, s]) => s),
  };
  return mapping;
}

/** The mesh's shared enums (ecommerce.common.v1), stored the same way by every service that keeps them. */
export const paymentMethodTypes = dbEnum<PaymentMethodType>([
  [PaymentMethodType.CREDIT_CARD, "credit_card"],
  [PaymentMethodType.DEBIT_CARD, "debit_card"],
  [PaymentMethodType.PAYPAL, "paypal"],
]);

export const cardBrands = dbEnum<CardBrand>([
  [CardBrand.VISA, "visa"],
  [CardBrand.MASTERCARD, "mastercard"],
  [CardBrand.AMEX, "amex"],
  [CardBrand.DISCOVER, "discover"],
  [CardBrand.DINERS, "diners"],
  [CardBrand.JCB, "jcb"],
  [CardBrand.UNIONPAY, "unionpay"],
  [CardBrand.MAESTRO, "maestro"],
  [CardBrand.OTHER, "other"],
]);
