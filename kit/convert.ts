/**
 * Conversions between database values and contract types, shared by all
 * services so each is written once.
 */
import { type Timestamp, timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";

/** A timestamptz as read by MikroORM (Date through entities, ISO string through raw SQL) to a Timestamp. */
export function timestampOf(value: Date | string | null | undefined): Timestamp | undefined {
  if (value === null || value === undefined) return undefined;
  return timestampFromDate(value instanceof Date ? value : new Date(value));
}

export function dateOf(value: Timestamp | undefined): Date | undefined {
  return value ? timestampDate(value) : undefined;
}
