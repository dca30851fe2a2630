/**
 * List paging shared by every List/Search RPC: page_size 0 means 20, at most 100;
 * page tokens are opaque cursors (keyset: the last row's sort key, or a bounded
 * offset) that only this service can make and that only continue the list they
 * came from.
 *
 * A token is base64url of `version(1) || binding(8) || cursor JSON || tag(16)`:
 * - tag: HMAC-SHA256 (truncated to 128 bits) with the service's page-token key over
 *   the RPC's full method name and everything before the tag, so a forged, truncated
 *   or altered token, or one from another list RPC, is refused;
 * - binding: a hash of the request without page_token and page_size (AIP-158: the
 *   other fields must not change between pages), so a token replayed with other
 *   filters or another order is refused with a message saying so;
 * - cursor: each field is checked against its declared type when read, so even a
 *   token signed by an older release cannot reach SQL as the wrong type.
 * Every refusal is INVALID_ARGUMENT with reason INVALID_PAGE_TOKEN on field page_token.
 */
import { createHash, createHmac, createSecretKey, type KeyObject, timingSafeEqual } from "node:crypto";
import type { DescMethod } from "@bufbuild/protobuf";
import { currentScope, runInScope } from "./context.ts";
import { invalidArgument } from "./errors.ts";
import { requestHash } from "./idempotency.ts";
import { Params, type Sql } from "./sql.ts";

export const defaultPageSize = 20;
export const maxPageSize = 100;

export function pageSizeOf(requested: number): number {
  if (!requested || requested <= 0) return defaultPageSize;
  return Math.min(requested, maxPageSize);
}

/**
 * Types of cursor values, named after the PostgreSQL casts they are bound with
 * (`?::timestamptz`), so a sort spec's casts double as its cursor's types.
 */
export type CursorScalar = "text" | "uuid" | "timestamptz" | "bigint" | "int";
/** A scalar, a tuple of scalars (a multi-column sort key), or an offset from 0 to `offset`. */
export type CursorField = CursorScalar | readonly CursorScalar[] | { readonly offset: number };
export type CursorSchema = Record<string, CursorField>;

type ValueOf<F> = F extends "int" | { readonly offset: number } ? number : F extends readonly CursorScalar[] ? (string | number)[] : string;
export type CursorOf<S extends CursorSchema> = { [K in keyof S]: ValueOf<S[K]> };

export interface Page<C> {
  /** Rows to return. */
  size: number;
  /** Where the previous page ended; undefined on the first page. */
  after: C | undefined;
  /** The token of the page that follows the row whose sort key is `last`. */
  next(last: C): string;
}

const version = 1;
const bindingBytes = 8;
const tagBytes = 16;
const maxTextLength = 1024;

const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
// ISO 8601 as JavaScript writes it, or timestamptz::text as PostgreSQL writes it; ±infinity for coalesced sort keys.
const timestampPattern =
  /^(?:-?infinity|\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])[ T](?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d(?:\.\d{1,6})?(?:Z|[+-]\d{2}(?::?\d{2})?)?)$/;

function scalarOk(type: CursorScalar, v: unknown): boolean {
  switch (type) {
    case "text":
      return typeof v === "string" && v.length <= maxTextLength;
    case "uuid":
      return typeof v === "string" && uuidPattern.test(v);
    case "timestamptz":
      return typeof v === "string" && timestampPattern.test(v);
    case "bigint":
      return (typeof v === "string" && /^-?\d{1,19}$/.test(v) && BigInt(v) >= -(2n ** 63n) && BigInt(v) < 2n ** 63n) || Number.isSafeInteger(v);
    case "int": {
      const n = typeof v === "string" && /^-?\d{1,10}$/.test(v) ? Number(v) : v;
      return Number.isInteger(n) && (n as number) >= -(2 ** 31) && (n as number) < 2 ** 31;
    }
  }
}

function fieldOk(field: CursorField, v: unknown): boolean {
  if (typeof field === "string") return scalarOk(field, v);
  if ("offset" in field) return Number.isInteger(v) && (v as number) >= 0 && (v as number) <= field.offset;
  return Array.isArray(v) && v.length === field.length && field.every((t, i) => scalarOk(t, v[i]));
}

/** Ints arrive as strings from `::text` sort keys; SQL and handlers get numbers. */
function normalized(field: CursorField, v: unknown): unknown {
  if (field === "int") return Number(v);
  if (Array.isArray(field)) return (v as unknown[]).map((x, i) => (field[i] === "int" ? Number(x) : x));
  return v;
}

const invalidToken = () => invalidArgument("page_token", "is not a token this list returned; start again without one", "INVALID_PAGE_TOKEN");
const otherList = () =>
  invalidArgument("page_token", "belongs to this list with other filters or another order; keep the other fields unchanged between pages, or start again without a token", "INVALID_PAGE_TOKEN");

export interface PagingScope {
  /** A KeyObject: createHmac with a Buffer key imports it on every call (4 times the HMAC's own cost). */
  key: KeyObject;
  method: DescMethod;
}

/** The key page tokens are signed with, derived from a secret (PAGE_TOKEN_KEY, or by default the service secret). */
export function pageTokenKeyOf(secret: string): Buffer {
  return createHmac("sha256", secret).update("ecommerce.kit.page-token.v1").digest();
}

/**
 * What `pageOf` needs of a call: the service's page-token key and the RPC, for List RPCs only
 * (a page_token field); the hot Get RPCs carry none. Computed once per method; the call's
 * scope carries it (kit/call.ts).
 */
export function pagingScopes(secret: string): (method: DescMethod) => PagingScope | undefined {
  const key = createSecretKey(pageTokenKeyOf(secret));
  const scopes = new WeakMap<DescMethod, PagingScope | null>();
  return (method) => {
    let scope = scopes.get(method);
    if (scope === undefined) scopes.set(method, (scope = method.input.fields.some((f) => f.name === "page_token") ? { key, method } : null));
    return scope ?? undefined;
  };
}

/**
 * Runs `fn` in the paging scope an RPC of `method` has, after the same page-token check the
 * call interceptor makes on `message`: RPC code run outside a service (the explain scripts
 * of scripts/bench) pages exactly as it does inside one, without forging a Connect request.
 */
export function inPagingScope<T>(secret: string, method: DescMethod, message: { pageToken?: unknown }, fn: () => Promise<T>): Promise<T> {
  const paging = pagingScopes(secret)(method);
  if (!paging) return fn();
  checkPageToken(paging, { stream: false, message });
  return runInScope({ ...currentScope(), paging }, fn);
}

function tagOf(scope: PagingScope, body: Buffer): Buffer {
  return createHmac("sha256", scope.key).update(`${scope.method.parent.typeName}/${scope.method.name}\0`).update(body).digest().subarray(0, tagBytes);
}

function bindingOf(scope: PagingScope, req: object): Buffer {
  const rest = { ...req, pageToken: "", pageSize: 0 } as unknown as Parameters<typeof requestHash>[1];
  return createHash("sha256").update(requestHash(scope.method.input, rest)).digest().subarray(0, bindingBytes);
}

/**
 * The page a List RPC is asked for: its size, where the previous page ended, and how
 * to write the next token. `req` is the RPC's request (with fields that match without
 * regard to spelling normalized, so they may change between pages); `schema` declares the cursor.
 */
export function pageOf<S extends CursorSchema, R extends { pageToken: string; pageSize: number; $typeName: string }>(req: R, schema: S): Page<CursorOf<S>> {
  const scope = currentScope()?.paging;
  if (!scope) throw new Error("pageOf outside an RPC: is the service started through runService?");
  if (req.$typeName !== scope.method.input.typeName) throw new Error(`pageOf: ${req.$typeName} is not the request of ${scope.method.name}`);
  const binding = bindingOf(scope, req);
  const fields = Object.keys(schema);
  return {
    size: pageSizeOf(req.pageSize),
    after: req.pageToken ? read(scope, req.pageToken, binding, schema, fields) : undefined,
    next(last) {
      for (const f of fields) if (!fieldOk(schema[f]!, last[f])) throw new Error(`page cursor field ${f} does not match its type`);
      const body = Buffer.concat([Buffer.of(version), binding, Buffer.from(JSON.stringify(Object.fromEntries(fields.map((f) => [f, last[f]]))))]);
      return Buffer.concat([body, tagOf(scope, body)]).toString("base64url");
    },
  };
}

/** The signed body of a token this RPC wrote, else INVALID_PAGE_TOKEN. */
function authentic(scope: PagingScope, token: string): Buffer {
  const raw = Buffer.from(token, "base64url");
  // Node's decoder skips characters outside the alphabet and ignores trailing bits: only the canonical spelling counts.
  if (raw.toString("base64url") !== token || raw.length < 1 + bindingBytes + 2 + tagBytes || raw[0] !== version) throw invalidToken();
  const body = raw.subarray(0, raw.length - tagBytes);
  if (!timingSafeEqual(raw.subarray(raw.length - tagBytes), tagOf(scope, body))) throw invalidToken();
  return body;
}

/**
 * Refuses a page token this RPC did not sign, before anything else looks at the request (the
 * kit's call interceptor runs it before validation): every RPC with a page_token field refuses
 * forgeries the same way, whatever else its request lacks and whether or not its handler pages.
 * (The binding to the filters is checked by `pageOf`, on the request as the handler normalized it.)
 */
export function checkPageToken(scope: PagingScope, req: { stream: boolean; message: unknown }): void {
  const token = req.stream ? "" : (req.message as { pageToken?: unknown }).pageToken;
  if (typeof token === "string" && token) authentic(scope, token);
}

function read<S extends CursorSchema>(scope: PagingScope, token: string, binding: Buffer, schema: S, fields: string[]): CursorOf<S> {
  const body = authentic(scope, token);
  if (!body.subarray(1, 1 + bindingBytes).equals(binding)) throw otherList();
  let cursor: unknown;
  try {
    cursor = JSON.parse(body.subarray(1 + bindingBytes).toString("utf8"));
  } catch {
    throw invalidToken();
  }
  if (typeof cursor !== "object" || cursor === null || Array.isArray(cursor)) throw invalidToken();
  const values = cursor as Record<string, unknown>;
  if (Object.keys(values).length !== fields.length || fields.some((f) => !fieldOk(schema[f]!, values[f]))) throw invalidToken();
  return Object.fromEntries(fields.map((f) => [f, normalized(schema[f]!, values[f])])) as CursorOf<S>;
}

/**
 * One page of a newest-first list, the commonest List RPC: `select` (select list, from and
 * joins; no where, order or limit) filtered by the conditions `where` adds (binding values
 * through `p`), in (created_at, id) descending order of the row alias `alias`, keyset-paged.
 * The select must return `<alias>.created_at::text as created_key` (the cursor keeps
 * PostgreSQL's microseconds) and `id`.
 */
export async function newestFirstPage<Row extends { id: string; created_key: string }>(
  db: Sql,
  req: { pageSize: number; pageToken: string; $typeName: string },
  query: { select: string; alias: string; where: (p: Params) => string[] },
): Promise<{ rows: Row[]; next: string }> {
  const pages = pageOf(req, { t: "timestamptz", i: "uuid" });
  const p = new Params();
  const { alias } = query;
  const where = query.where(p);
  if (pages.after) where.push(`(${alias}.created_at, ${alias}.id) < (${p.add(pages.after.t)}::timestamptz, ${p.add(pages.after.i)}::uuid)`);
  const rows = await db.all<Row>(
    `${query.select} ${where.length ? `where ${where.join(" and ")}` : ""} order by ${alias}.created_at desc, ${alias}.id desc limit ${p.add(pages.size + 1)}`,
    p.values,
  );
  const shown = rows.slice(0, pages.size);
  const last = shown.at(-1);
  return { rows: shown, next: rows.length > pages.size && last ? pages.next({ t: last.created_key, i: last.id }) : "" };
}
