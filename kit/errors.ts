/**
 * The one error mapping of the mesh. Handlers throw these (or plain
 * ConnectErrors); the error interceptor turns everything else into INTERNAL
 * without leaking internals, after logging it with the request id.
 */
import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { ErrorInfoSchema, RetryInfoSchema } from "../gen/ecommerce/common/v1/errors_pb.js";

export { Code, ConnectError };

export interface ErrorDetailsInit {
  /** Stable UPPER_SNAKE_CASE reason a program can act on (ErrorInfo.reason). */
  reason?: string;
  /** Request field the error is about, as a path. */
  field?: string;
  metadata?: Record<string, string>;
  /** When retrying later can succeed (RetryInfo). */
  retryAfterMs?: number;
}

/** Builds a ConnectError with ErrorInfo (and RetryInfo) details attached. */
export function domainError(code: Code, message: string, init: ErrorDetailsInit = {}): ConnectError {
  const details = [];
  if (init.reason || init.field || init.metadata) {
    details.push({
      desc: ErrorInfoSchema,
      value: create(ErrorInfoSchema, { reason: init.reason ?? "", field: init.field ?? "", metadata: init.metadata ?? {} }),
    });
  }
  if (init.retryAfterMs !== undefined) {
    details.push({ desc: RetryInfoSchema, value: create(RetryInfoSchema, { retryDelay: durationFromMs(init.retryAfterMs) }) });
  }
  return new ConnectError(message, code, undefined, details);
}

export const invalidArgument = (field: string, message: string, reason = "INVALID_ARGUMENT") =>
  domainError(Code.InvalidArgument, `${field}: ${message}`, { field, reason });

export const notFound = (what: string, id: string) =>
  domainError(Code.NotFound, `${what} ${id} not found`, { reason: `${what.toUpperCase().replace(/\W+/g, "_")}_NOT_FOUND` });

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
  if (name === "ConnectionException" || code === "ECONNREFUSED" || code === "57P01") {
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
