/**
 * The address book: at most 50 addresses per user, and at most one default
 * per purpose (shipping, billing), enforced here and by partial unique
 * indexes. Changes take the profile lock (findProfile with lock) first.
 * A previous default is always cleared before the new one is set, so the
 * unique indexes never see two defaults, whatever order the ORM flushes in.
 */
import type { PostalAddress } from "../../gen/ecommerce/common/v1/address_pb.js";
import {
  type AddAddressRequest,
  type Address,
  type AddAddressResponse,
  AddressType,
  type DeleteAddressRequest,
  type GetAddressRequest,
  type GetAddressResponse,
  type GetDefaultAddressRequest,
  type GetDefaultAddressResponse,
  type ListAddressesRequest,
  type ListAddressesResponse,
  type SetDefaultAddressRequest,
  type SetDefaultAddressResponse,
  type UpdateAddressRequest,
  type UpdateAddressResponse,
} from "../../gen/ecommerce/user/v1/user_pb.js";
import type { EntityManager } from "../../kit/db.ts";
import { Code, domainError, failedPrecondition, notFound } from "../../kit/errors.ts";
import { applyFieldMask, type FieldUpdate, maskPaths } from "../../kit/field-mask.ts";
import { sqlOf } from "../../kit/sql.ts";
import { v7 as uuidv7 } from "uuid";
import { isAssignedCountry } from "./countries.ts";
import { AddressEntity, type AddressRow, PaymentMethodEntity } from "./entities.ts";
import {
  type AddressFields,
  addressColumns,
  addressMessage,
  addressTypes,
  compareAddresses,
  coversBilling,
  coversShipping,
  isPresent,
  type Nullable,
  nullIfEmpty,
} from "./mapping.ts";
import { findProfile, profileNotFound } from "./profiles.ts";

export const maxAddresses = 50;

type Purpose = "shipping" | "billing";
const flagOf = { shipping: "isDefaultShipping", billing: "isDefaultBilling" } as const;

function checkCountry(code: string, field: string): void {
  if (!isAssignedCountry(code)) {
    throw domainError(Code.InvalidArgument, `${field}: "${code}" is not an assigned ISO 3166-1 alpha-2 country code`, { reason: "UNSUPPORTED_COUNTRY", field });
  }
}

function postalColumns(pa: PostalAddress) {
  return {
    firstName: pa.firstName,
    lastName: pa.lastName,
    company: nullIfEmpty(pa.company),
    addressLine1: pa.addressLine1,
    addressLine2: nullIfEmpty(pa.addressLine2),
    city: pa.city,
    state: nullIfEmpty(pa.state),
    postalCode: nullIfEmpty(pa.postalCode),
    country: pa.countryCode,
    phone: nullIfEmpty(pa.phone),
  };
}

/** Clears the user's current default for a purpose, except on `keep`; runs at once, before the flush. */
async function clearDefault(em: EntityManager, userId: string, purpose: Purpose, keep?: string): Promise<void> {
  const flag = flagOf[purpose];
  await em.nativeUpdate(AddressEntity, { userId, [flag]: true, ...(keep ? { id: { $ne: keep } } : {}) }, { [flag]: false, updatedAt: new Date() });
}

async function ownAddress(em: EntityManager, userId: string, addressId: string): Promise<AddressRow> {
  const row = await em.findOne(AddressEntity, { id: addressId, userId });
  if (!row) throw notFound("address", addressId);
  return row;
}

export async function addAddress(em: EntityManager, userId: string, req: AddAddressRequest): Promise<Omit<AddAddressResponse, "$typeName">> {
  const pa = req.postalAddress!;
  checkCountry(pa.countryCode, "postal_address.country_code");
  const type = addressTypes.toDb(req.type);
  return em.transactional(async (tx) => {
    await findProfile(tx, userId, true);
    const existing = await tx.find(AddressEntity, { userId });
    if (existing.length >= maxAddresses) {
      throw domainError(Code.ResourceExhausted, `an address book holds at most ${maxAddresses} addresses; delete one first`, { reason: "ADDRESS_LIMIT_REACHED" });
    }
    // The first address for a purpose becomes its default; set_as_default takes it over.
    const hasShipping = existing.some((a) => a.isDefaultShipping);
    const hasBilling = existing.some((a) => a.isDefaultBilling);
    const defaultShipping = coversShipping(type) && (req.setAsDefault || !hasShipping);
    const defaultBilling = coversBilling(type) && (req.setAsDefault || !hasBilling);
    if (defaultShipping && hasShipping) await clearDefault(tx, userId, "shipping");
    if (defaultBilling && hasBilling) await clearDefault(tx, userId, "billing");
    const now = new Date();
    const row = tx.create(AddressEntity, {
      id: uuidv7(),
      userId,
      type,
      isDefaultShipping: defaultShipping,
      isDefaultBilling: defaultBilling,
      ...postalColumns(pa),
      createdAt: now,
      updatedAt: now,
    });
    await tx.flush();
    return { address: addressMessage(row) };
  });
}

/** The updatable paths of an address, applied in this order. */
const addressUpdates: Record<"type" | "postal_address", FieldUpdate<AddressRow, Address>> = {
  type: (row, input) => {
    const type = addressTypes.toDb(input.type);
    // A default for a purpose the new type no longer covers is removed, not moved.
    if (!coversShipping(type)) row.isDefaultShipping = false;
    if (!coversBilling(type)) row.isDefaultBilling = false;
    if (row.type === type) return false;
    row.type = type;
    return true;
  },
  postal_address: (row, input) => {
    Object.assign(row, postalColumns(input.postalAddress!));
    return true;
  },
};

export async function updateAddress(em: EntityManager, userId: string, req: UpdateAddressRequest): Promise<Omit<UpdateAddressResponse, "$typeName">> {
  const input = req.address!;
  const paths = maskPaths(req.updateMask);
  if (paths.has("postal_address")) checkCountry(input.postalAddress!.countryCode, "address.postal_address.country_code");
  return em.transactional(async (tx) => {
    await findProfile(tx, userId, true);
    const row = await ownAddress(tx, userId, input.id);
    if (paths.has("type") && !coversBilling(addressTypes.toDb(input.type))) {
      // A payment method's billing address must stay usable for billing (as AddPaymentMethod requires).
      const user = await tx.findOne(PaymentMethodEntity, { userId, billingAddressId: row.id });
      if (user) {
        throw failedPrecondition("a saved payment method uses this address as its billing address: change or delete that payment method first", "ADDRESS_IN_USE", {
          payment_method_id: user.id,
        });
      }
    }
    applyFieldMask(req.updateMask, row, input, addressUpdates);
    row.updatedAt = new Date();
    await tx.flush();
    return { address: addressMessage(row) };
  });
}

export async function deleteAddress(em: EntityManager, userId: string, req: DeleteAddressRequest): Promise<void> {
  await em.transactional(async (tx) => {
    await findProfile(tx, userId, true);
    const row = await ownAddress(tx, userId, req.addressId);
    const user = await tx.findOne(PaymentMethodEntity, { userId, billingAddressId: row.id });
    if (user) {
      throw failedPrecondition("a saved payment method uses this address as its billing address: change or delete that payment method first", "ADDRESS_IN_USE", {
        payment_method_id: user.id,
      });
    }
    // When it was a default, no other address takes its place (the contract says so).
    tx.remove(row);
  });
}

const typesListed: Record<AddressType, string[] | undefined> = {
  [AddressType.UNSPECIFIED]: undefined,
  [AddressType.SHIPPING]: ["shipping", "both"],
  [AddressType.BILLING]: ["billing", "both"],
  [AddressType.BOTH]: ["both"],
};

/** ListAddresses in one statement: the profile (NOT_FOUND without one) left-joined with its addresses, mapped straight to messages. */
export async function listAddresses(em: EntityManager, userId: string, req: ListAddressesRequest): Promise<Omit<ListAddressesResponse, "$typeName">> {
  const types = typesListed[req.type];
  const rows = await sqlOf(em).all<Nullable<AddressFields>>(
    `select ${addressColumns} from user_profiles p
       left join user_addresses a on a.user_id = p.user_id${types ? " and a.type = any($2::text[])" : ""}
      where p.user_id = $1`,
    types ? [userId, types] : [userId],
  );
  if (rows.length === 0) throw profileNotFound(userId);
  return { addresses: rows.filter(isPresent).sort(compareAddresses).map(addressMessage) };
}

export async function setDefaultAddress(em: EntityManager, userId: string, req: SetDefaultAddressRequest): Promise<Omit<SetDefaultAddressResponse, "$typeName">> {
  return em.transactional(async (tx) => {
    await findProfile(tx, userId, true);
    const row = await ownAddress(tx, userId, req.addressId);
    const purposes: Purpose[] = req.type === AddressType.SHIPPING ? ["shipping"] : req.type === AddressType.BILLING ? ["billing"] : ["shipping", "billing"];
    const fits = req.type === AddressType.BOTH ? row.type === "both" : purposes.every((p) => (p === "shipping" ? coversShipping(row.type) : coversBilling(row.type)));
    if (!fits) {
      throw failedPrecondition(
        `a ${row.type} address cannot be the default ${req.type === AddressType.BOTH ? "shipping and billing" : purposes[0]} address`,
        "ADDRESS_TYPE_MISMATCH",
      );
    }
    let changed = false;
    for (const purpose of purposes) {
      if (row[flagOf[purpose]]) continue; // idempotent
      await clearDefault(tx, userId, purpose, row.id);
      row[flagOf[purpose]] = true;
      changed = true;
    }
    if (changed) row.updatedAt = new Date();
    await tx.flush();
    return { address: addressMessage(row) };
  });
}

export async function getAddress(em: EntityManager, req: GetAddressRequest): Promise<Omit<GetAddressResponse, "$typeName">> {
  const row = await sqlOf(em).one<AddressFields>(`select ${addressColumns} from user_addresses a where a.id = $1 and a.user_id = $2`, [req.addressId, req.userId]);
  if (!row) throw notFound("address", req.addressId);
  return { address: addressMessage(row) };
}

const defaultColumn = { shipping: "is_default_shipping", billing: "is_default_billing" } as const;

export async function getDefaultAddress(em: EntityManager, req: GetDefaultAddressRequest): Promise<Omit<GetDefaultAddressResponse, "$typeName">> {
  const purpose: Purpose = req.type === AddressType.BILLING ? "billing" : "shipping";
  const row = await sqlOf(em).one<AddressFields>(`select ${addressColumns} from user_addresses a where a.user_id = $1 and a.${defaultColumn[purpose]}`, [req.userId]);
  if (!row) throw domainError(Code.NotFound, `user ${req.userId} has no default ${purpose} address`, { reason: "NO_DEFAULT_ADDRESS" });
  return { address: addressMessage(row) };
}
