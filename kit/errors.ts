/**
 * The one error mapping of the mesh. Handlers throw these (or plain
 * ConnectErrors); the error interceptor turns everything else into INTERNAL
 * without leaking internals, after logging it with the request id.
 *
 * Details are googleapis' standard google.rpc types (third_party/proto/google/rpc),
 * so stock helpers (grpcio-status, grpc-js, Connect's findDetails) decode them:
 * ErrorInfo (reason, domain, metadata), BadRequest (one violation per invalid
 * field), RetryInfo and ResourceInfo. The domain (the service's proto package) is
 * filled in once, by the error interceptor (`withDomain`), not by each throw.
 */
import { clone, create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { BadRequestSchema, ErrorInfoSchema, ResourceInfoSchema, RetryInfoSchema } from "../gen/google/rpc/error_details_pb.js";

export { Code, ConnectError };

/** One invalid request field (a BadRequest.FieldViolation). */
export interface FieldViolationInit {
  /** Path of the field in the request: "profile.first_name", "items[2].quantity", `attributes["color"]`. */
  field: string;
  /** What is wrong with it, for a human. */
  description: string;
}

export interface ErrorDetailsInit {
  /** Stable UPPER_SNAKE_CASE reason a program can act on (ErrorInfo.reason). */
  reason?: string;
  /** Request field the error is about, as a path (a BadRequest violation described by the message). */
  field?: string;
  /** Every invalid field, when there are several (BadRequest). */
  violations?: FieldViolationInit[];
  metadata?: Record<string, string>;
  /** When retrying later can succeed (RetryInfo). */
  retryAfterMs?: number;
  /** The resource the error is about, e.g. the one not found (ResourceInfo). */
  resource?: { type: string; name: string };
}

/** Builds a ConnectError with ErrorInfo (and BadRequest, RetryInfo, ResourceInfo) details attached. */
export function domainError(code: Code, message: string, init: ErrorDetailsInit = {}): ConnectError {
  const details = [];
  if (init.reason || init.metadata) {
    details.push({ desc: ErrorInfoSchema, value: create(ErrorInfoSchema, { reason: init.reason ?? "", metadata: init.metadata ?? {} }) });
  }
  const violations = [...(init.violations ?? [])];
  if (init.field) {
    // "field: what is wrong" messages describe the field without repeating its path.
    const prefix = `${init.field}: `;
    violations.unshift({ field: init.field, description: message.startsWith(prefix) ? message.slice(prefix.length) : message });
  }
  if (violations.length > 0) {
    details.push({ desc: BadRequestSchema, value: create(BadRequestSchema, { fieldViolations: violations }) });
  }
  if (init.retryAfterMs !== undefined) {
    details.push({ desc: RetryInfoSchema, value: create(RetryInfoSchema, { retryDelay: durationFromMs(init.retryAfterMs) }) });
  }
  if (init.resource) {
    details.push({
      desc: ResourceInfoSchema,
      value: create(ResourceInfoSchema, { resourceType: init.resource.type, resourceName: init.resource.name, description: message }),
    });
  }
  return new ConnectError(message, code, undefined, details);
}

/**
 * The error with `domain` set on its ErrorInfo where the thrower left it empty.
 * A detail received from a peer (still encoded) keeps the peer's domain.
 */
export function withDomain(error: ConnectError, domain: string): ConnectError {
  let changed = false;
  const details = error.details.map((d) => {
    if (!("desc" in d) || d.desc.typeName !== ErrorInfoSchema.typeName) return d;
    const info = create(ErrorInfoSchema, d.value);
    if (info.domain) return d;
    changed = true;
    const copy = clone(ErrorInfoSchema, info);
    copy.domain = domain;
    return { desc: ErrorInfoSchema, value: copy };
  });
  if (!changed) return error;
  // A new error, so a module-level error instance is never rewritten in place.
  const out = new ConnectError(error.rawMessage, error.code, error.metadata, [], error.cause);
  out.details = details;
  return out;
}

export const invalidArgument = (field: string, message: string, reason = "INVALID_ARGUMENT") =>
  domainError(Code.InvalidArgument, `${field}: ${message}`, { field, reason });

export const notFound = (what: string, id: string) =>
  domainError(Code.NotFound, `${what} ${id} not found`, {
    reason: `${what.toUpperCase().replace(/\W+/g, "_")}_NOT_FOUND`,
    resource: { type: what, name: id },
  });

export const alreadyExists = (message: string, reason: string, field?: string) =>
  domainError(Code.AlreadyExists, message, { reason, ...(field ? { field } : {}) });

export const failedPrecondition = (message: string, reason: string, metadata?: Record<string, string>) =>
  domainError(Code.FailedPrecondition, message, { reason, ...(metadata ? { metadata } : {}) });

export const permissionDenied = (message: string, reason = "PERMISSION_DENIED") =>
  domainError(Code.PermissionDenied, message, { reason });

export const unauthenticated = (message: string, reason = "UNAUTHENTICATED") =>
  domainError(Code.Unauthenticated, message, { reason });

export const unavailable = (message: string, reason = "UNAVAILABLE", retryAfterMs?: number) =>
  domainError(Code.Unavailable, message, { reason, ...(retryAfterMs !== undefined ? { retryAfterMs } : {}) });

/** Reads the ErrorInfo reason of an error, if it carries one (for clients and tests). */
export function errorReason(error: unknown): string | undefined {
  const ce = ConnectError.from(error);
  return ce.findDetails(ErrorInfoSchema)[0]?.reason;
}

/** The request fields an error names (its BadRequest field violations), in order (for clients and tests). */
export function errorFields(error: unknown): string[] {
  const ce = ConnectError.from(error);
  return ce.findDetails(BadRequestSchema).flatMap((b) => b.fieldViolations.map((v) => v.field));
}

/** True for a PostgreSQL unique-constraint violation, raw or wrapped by MikroORM. */
export function isUniqueViolation(error: unknown): boolean {
  const e = error as { name?: string; code?: string } | null;
  return e?.name === "UniqueConstraintViolationException" || e?.code === "23505";
}

/**
 * Maps errors that are not ConnectErrors to one, by kind: database constraint
 * and concurrency failures get their meaningful codes; anything else is INTERNAL
 * with a message that names the request id and nothing of the internals.
 */
export function toConnectError(error: unknown, requestId: string): { error: ConnectError; unexpected: boolean } {
  if (error instanceof ConnectError) return { error, unexpected: false };
  const name = (error as { name?: string } | null)?.name ?? "";
  const code = (error as { code?: string } | null)?.code;
  if (isUniqueViolation(error)) {
    return { error: domainError(Code.AlreadyExists, "the resource already exists", { reason: "ALREADY_EXISTS" }), unexpected: false };
  }
  if (name === "OptimisticLockError" || code === "40001" || code === "40P01") {
    return {
      error: domainError(Code.Aborted, "the resource changed concurrently; retry the call", { reason: "CONCURRENT_MODIFICATION" }),
      unexpected: false,
    };
  }
  if (code === "55P03") {
    // lock_timeout (kit/sql.ts lockTimeoutForCall): others hold what this call needs; nothing was changed.
    return { error: domainError(Code.Aborted, "the resource is busy with other calls; retry the call", { reason: "CONTENDED" }), unexpected: false };
  }
  if (name === "ConnectionException" || code === "ECONNREFUSED" || code === "57P01" || code === "53300") {
    return { error: unavailable("the service's database is unavailable; retry shortly", "DATABASE_UNAVAILABLE", 1000), unexpected: true };
  }
  if (error instanceof Error && error.name === "AbortError") {
    return { error: new ConnectError("the call was cancelled", Code.Canceled), unexpected: false };
  }
  return {
    error: domainError(Code.Internal, `internal error; quote request id ${requestId} when reporting it`, { reason: "INTERNAL" }),
    unexpected: true,
  };
}
