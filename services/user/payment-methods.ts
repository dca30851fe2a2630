/**
 * Saved payment methods: display data plus the provider's token, encrypted at
 * rest (token-cipher.ts) and handed out only to the Payment service, each
 * read recorded in user_payment_token_accesses. At most 20 per user, at most
 * one default (partial unique index); changes take the profile lock first.
 */
import { v7 as uuidv7 } from "uuid";
import { type AddPaymentMethodRequest, type AddPaymentMethodResponse, type DeletePaymentMethodRequest, type GetPaymentMethodTokenRequest, type GetPaymentMethodTokenResponse, type ListPaymentMethodsResponse, type SetDefaultPaymentMethodRequest, type SetDefaultPaymentMethodResponse } from "../../gen/ecommerce/user/v1/user_pb.js";
import { PaymentMethodType } from "../../gen/ecommerce/common/v1/payment_method_pb.js";
import type { Principal } from "../../kit/auth/principal.ts";
import type { EntityManager } from "../../kit/db.ts";
import { sqlOf } from "../../kit/sql.ts";
import { Code, domainError, failedPrecondition, notFound, permissionDenied } from "../../kit/errors.ts";
import { AddressEntity, PaymentMethodEntity, type PaymentMethodRow, PaymentTokenAccessEntity } from "./entities.ts";
import {
  cardBrands,
  comparePaymentMethods,
  coversBilling,
  isExpired,
  isPresent,
  type Nullable,
  nullIfEmpty,
  type PaymentMethodFields,
  paymentMethodColumns,
  paymentMethodMessage,
  paymentMethodTypes,
} from "./mapping.ts";
import { findProfile, profileNotFound } from "./profiles.ts";
import { type TokenCipher, tokenBinding } from "./token-cipher.ts";

export const maxPaymentMethods = 20;

/** The only service that may read a provider token. */
export const tokenReader = "payment";

async function ownMethod(em: EntityManager, userId: string, id: string): Promise<PaymentMethodRow> {
  const row = await em.findOne(PaymentMethodEntity, { id, userId });
  if (!row) throw notFound("payment method", id);
  return row;
}

async function clearDefault(em: EntityManager, userId: string, keep?: string): Promise<void> {
  await em.nativeUpdate(PaymentMethodEntity, { userId, isDefault: true, ...(keep ? { id: { $ne: keep } } : {}) }, { isDefault: false, updatedAt: new Date() });
}

export async function addPaymentMethod(
  em: EntityManager,
  cipher: TokenCipher,
  userId: string,
  req: AddPaymentMethodRequest,
): Promise<Omit<AddPaymentMethodResponse, "$typeName">> {
  const isCard = req.type !== PaymentMethodType.PAYPAL;
  if (isCard && isExpired(req.expiryYear, req.expiryMonth)) {
    throw domainError(Code.InvalidArgument, `expiry_month: the card expired in ${req.expiryMonth}/${req.expiryYear}`, { reason: "CARD_EXPIRED", field: "expiry_month" });
  }
  return em.transactional(async (tx) => {
    await findProfile(tx, userId, true);
    const existing = await tx.find(PaymentMethodEntity, { userId });
    if (existing.length >= maxPaymentMethods) {
      throw domainError(Code.ResourceExhausted, `at most ${maxPaymentMethods} payment methods can be saved; delete one first`, { reason: "PAYMENT_METHOD_LIMIT_REACHED" });
    }
    if (req.billingAddressId !== "") {
      const address = await tx.findOne(AddressEntity, { id: req.billingAddressId, userId });
      if (!address) {
        throw domainError(Code.NotFound, `billing_address_id: the caller has no address ${req.billingAddressId}`, {
          reason: "BILLING_ADDRESS_NOT_FOUND",
          field: "billing_address_id",
        });
      }
      if (!coversBilling(address.type)) throw failedPrecondition("the billing address is a shipping-only address", "ADDRESS_TYPE_MISMATCH");
    }
    const hasDefault = existing.some((m) => m.isDefault);
    const makeDefault = req.setAsDefault || !hasDefault;
    if (makeDefault && hasDefault) await clearDefault(tx, userId);
    const id = uuidv7();
    const sealed = cipher.seal(req.providerToken, tokenBinding(id, userId));
    const now = new Date();
    const row = tx.create(PaymentMethodEntity, {
      id,
      userId,
      type: paymentMethodTypes.toDb(req.type),
      isDefault: makeDefault,
      cardType: isCard ? cardBrands.toDbOrNull(req.cardBrand) : null,
      last4: isCard ? req.last4 : null,
      expiryMonth: isCard ? req.expiryMonth : null,
      expiryYear: isCard ? req.expiryYear : null,
      cardholderName: nullIfEmpty(req.cardholderName),
      billingAddressId: nullIfEmpty(req.billingAddressId),
      providerToken: sealed.ciphertext,
      providerTokenKeyId: sealed.keyId,
      createdAt: now,
      updatedAt: now,
    });
    await tx.flush();
    return { paymentMethod: paymentMethodMessage(row) };
  });
}

export async function deletePaymentMethod(em: EntityManager, userId: string, req: DeletePaymentMethodRequest): Promise<void> {
  await em.transactional(async (tx) => {
    await findProfile(tx, userId, true);
    const row = await ownMethod(tx, userId, req.paymentMethodId);
    // Deleting the row erases the encrypted token with it.
    tx.remove(row);
    await tx.flush(); // the old default is gone before another one is set
    if (!row.isDefault) return;
    const [next] = await tx.find(PaymentMethodEntity, { userId }, { orderBy: { createdAt: "desc", id: "desc" }, limit: 1 });
    if (next) {
      next.isDefault = true;
      next.updatedAt = new Date();
    }
  });
}

/** ListPaymentMethods in one statement: the profile (NOT_FOUND without one) left-joined with its payment methods, mapped straight to messages. */
export async function listPaymentMethods(em: EntityManager, userId: string): Promise<Omit<ListPaymentMethodsResponse, "$typeName">> {
  const rows = await sqlOf(em).all<Nullable<PaymentMethodFields>>(
    `select ${paymentMethodColumns} from user_profiles p left join user_payment_methods m on m.user_id = p.user_id where p.user_id = $1`,
    [userId],
  );
  if (rows.length === 0) throw profileNotFound(userId);
  return { paymentMethods: rows.filter(isPresent).sort(comparePaymentMethods).map(paymentMethodMessage) };
}

export async function setDefaultPaymentMethod(
  em: EntityManager,
  userId: string,
  req: SetDefaultPaymentMethodRequest,
): Promise<Omit<SetDefaultPaymentMethodResponse, "$typeName">> {
  return em.transactional(async (tx) => {
    await findProfile(tx, userId, true);
    const row = await ownMethod(tx, userId, req.paymentMethodId);
    if (!row.isDefault) {
      await clearDefault(tx, userId, row.id);
      row.isDefault = true;
      row.updatedAt = new Date();
      await tx.flush();
    }
    return { paymentMethod: paymentMethodMessage(row) };
  });
}

type TokenAccessOutcome = "granted" | "denied" | "not_found" | "card_expired";

/**
 * The decrypted token, for the Payment service only. Every call is recorded,
 * refused ones too (in its own statement, so the record survives the error).
 */
export async function getPaymentMethodToken(
  em: EntityManager,
  cipher: TokenCipher,
  caller: Principal | undefined,
  req: GetPaymentMethodTokenRequest,
): Promise<Omit<GetPaymentMethodTokenResponse, "$typeName">> {
  const callerName = caller?.kind === "service" ? caller.service : caller?.kind === "user" ? `user:${caller.userId}` : "anonymous";
  const record = (outcome: TokenAccessOutcome) =>
    em.insert(PaymentTokenAccessEntity, { id: uuidv7(), caller: callerName, userId: req.userId, paymentMethodId: req.paymentMethodId, outcome, accessedAt: new Date() });

  if (caller?.kind !== "service" || caller.service !== tokenReader) {
    await record("denied");
    throw permissionDenied(`only the ${tokenReader} service may read payment method tokens`);
  }
  const row = await em.findOne(PaymentMethodEntity, { id: req.paymentMethodId, userId: req.userId });
  if (!row) {
    await record("not_found");
    throw notFound("payment method", req.paymentMethodId);
  }
  if (isExpired(row.expiryYear, row.expiryMonth)) {
    await record("card_expired");
    throw failedPrecondition(`the card expired in ${row.expiryMonth}/${row.expiryYear} and cannot be charged`, "CARD_EXPIRED");
  }
  const providerToken = cipher.open({ ciphertext: Buffer.from(row.providerToken), keyId: row.providerTokenKeyId }, tokenBinding(row.id, row.userId));
  await record("granted");
  return { paymentMethod: paymentMethodMessage(row), providerToken };
}
