/**
 * List paging shared by every List RPC: page_size 0 means 20, at most 100;
 * page tokens are opaque base64url cursors (keyset: the last row's sort key),
 * so pages stay stable while rows are inserted.
 */
import { invalidArgument } from "./errors.ts";

export const defaultPageSize = 20;
export const maxPageSize = 100;

export function pageSizeOf(requested: number): number {
  if (!requested || requested <= 0) return defaultPageSize;
  return Math.min(requested, maxPageSize);
}

export function encodePageToken(cursor: Record<string, string | number>): string {
  return Buffer.from(JSON.stringify(cursor)).toString("base64url");
}

export function decodePageToken<T extends Record<string, string | number>>(token: string, keys: (keyof T)[]): T | undefined {
  if (!token) return undefined;
  try {
    const parsed = JSON.parse(Buffer.from(token, "base64url").toString("utf8")) as T;
    if (typeof parsed !== "object" || parsed === null || keys.some((k) => !(k in parsed))) throw new Error("shape");
    return parsed;
  } catch {
    throw invalidArgument("page_token", "is not a token this list returned; start again without one", "INVALID_PAGE_TOKEN");
  }
}
