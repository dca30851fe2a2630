/**
 * Updates under a google.protobuf.FieldMask, the same way in every service: the
 * contract's rules already limited the paths to the updatable ones; each path
 * is applied once, in the order the service declares its fields, and the paths
 * that really changed something are returned (for the `*.updated` event and
 * for skipping a write that changes nothing).
 */
import type { FieldMask } from "@bufbuild/protobuf/wkt";

/** Applies one field from the request to the row; returns false when the value was already that. */
export type FieldUpdate<Row, Input> = (row: Row, input: Input) => boolean;

/** The mask's paths, once each. */
export function maskPaths(mask: FieldMask | undefined): Set<string> {
  return new Set(mask?.paths ?? []);
}

/**
 * Applies the masked fields of `input` to `row` through `fields` (one entry per
 * updatable path) and returns the paths that changed.
 */
export function applyFieldMask<Row, Input, Path extends string>(
  mask: FieldMask | undefined,
  row: Row,
  input: Input,
  fields: Record<Path, FieldUpdate<Row, Input>>,
): Path[] {
  const paths = maskPaths(mask);
  const changed: Path[] = [];
  for (const path of Object.keys(fields) as Path[]) {
    if (paths.has(path) && fields[path](row, input)) changed.push(path);
  }
  return changed;
}

/** A FieldUpdate that copies one value, compared by value (dates and bigints too). */
export function setField<Row, Input, V>(read: (input: Input) => V, get: (row: Row) => V, set: (row: Row, value: V) => void): FieldUpdate<Row, Input> {
  return (row, input) => {
    const next = read(input);
    if (same(get(row), next)) return false;
    set(row, next);
    return true;
  };
}

function same(a: unknown, b: unknown): boolean {
  if (a instanceof Date && b instanceof Date) return a.getTime() === b.getTime();
  return a === b;
}
