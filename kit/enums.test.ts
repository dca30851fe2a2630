/**
 * dbEnum (kit/enums.ts), the one way services store contract enums: each set value maps
 * to its database string and back, UNSPECIFIED is "not set" (null in an optional column,
 * an error in a required one), and a number or string the mapping does not know is a
 * bug that fails loudly, naming the value, rather than being stored or read as something else.
 */
import { describe, expect, it } from "vitest";
import { CardBrand, PaymentMethodType } from "../gen/ecommerce/common/v1/payment_method_pb.js";
import { cardBrands, dbEnum, paymentMethodTypes } from "./enums.ts";

const types = dbEnum<PaymentMethodType>([
  [PaymentMethodType.CREDIT_CARD, "credit_card"],
  [PaymentMethodType.PAYPAL, "paypal"],
]);

/** The set (non-zero) numbers of a generated TypeScript enum. */
const setValues = (e: object) => Object.values(e).filter((v): v is number => typeof v === "number" && v !== 0);

describe("dbEnum", () => {
  it("maps each set value to its database string and back, and lists the strings in declaration order", () => {
    expect(types.toDb(PaymentMethodType.CREDIT_CARD)).toBe("credit_card");
    expect(types.toDb(PaymentMethodType.PAYPAL)).toBe("paypal");
    expect(types.fromDb("credit_card")).toBe(PaymentMethodType.CREDIT_CARD);
    expect(types.fromDb("paypal")).toBe(PaymentMethodType.PAYPAL);
    expect(types.dbValues).toEqual(["credit_card", "paypal"]);
    expect(types.toDbOrNull(PaymentMethodType.PAYPAL)).toBe("paypal");
    expect(types.fromDbOrUnspecified("paypal")).toBe(PaymentMethodType.PAYPAL);
  });

  it("refuses UNSPECIFIED in a required column, and stores and reads it as null in an optional one", () => {
    expect(() => types.toDb(PaymentMethodType.UNSPECIFIED)).toThrow("no database value for enum number 0");
    expect(types.toDbOrNull(PaymentMethodType.UNSPECIFIED)).toBeNull();
    for (const empty of [null, undefined, ""]) expect(types.fromDbOrUnspecified(empty)).toBe(PaymentMethodType.UNSPECIFIED);
  });

  it("refuses a number or a string it does not know, naming it, on every path", () => {
    // DEBIT_CARD is in the contract but not in this mapping: as a number from a newer client.
    expect(() => types.toDb(PaymentMethodType.DEBIT_CARD)).toThrow("no database value for enum number 2");
    expect(() => types.toDbOrNull(PaymentMethodType.DEBIT_CARD)).toThrow("no database value for enum number 2");
    expect(() => types.toDb(99 as PaymentMethodType)).toThrow("no database value for enum number 99");
    // A value a migration ahead of the code wrote, or a case the mapping does not fold.
    expect(() => types.fromDb("debit_card")).toThrow('unknown database value "debit_card"');
    expect(() => types.fromDb("PAYPAL")).toThrow('unknown database value "PAYPAL"');
    expect(() => types.fromDbOrUnspecified("debit_card")).toThrow('unknown database value "debit_card"');
  });

  it("the mesh's shared enums map every value of the contract, one string each, both ways", () => {
    for (const [mapping, contract] of [
      [paymentMethodTypes, PaymentMethodType],
      [cardBrands, CardBrand],
    ] as const) {
      const values = setValues(contract);
      expect(mapping.dbValues).toHaveLength(values.length);
      expect(new Set(mapping.dbValues).size).toBe(values.length);
      for (const value of values) expect(mapping.fromDb(mapping.toDb(value as never))).toBe(value);
    }
  });
});
