/** Auth's errors, with the reasons documented in auth.proto. */
import { Code } from "@connectrpc/connect";
import { alreadyExists, domainError, failedPrecondition, unauthenticated } from "../../kit/errors.ts";

export const invalidCredentials = () => unauthenticated("the email or the password is wrong", "INVALID_CREDENTIALS");

export const accountLocked = (until: Date) =>
  domainError(Code.FailedPrecondition, `the account is locked after too many failed sign-ins until ${until.toISOString()}`, {
    reason: "ACCOUNT_LOCKED",
    metadata: { locked_until: until.toISOString() },
    retryAfterMs: Math.max(0, until.getTime() - Date.now()),
  });

export const accountDisabled = () => failedPrecondition("the account was deactivated; contact support", "ACCOUNT_DISABLED");

export const emailTaken = () => alreadyExists("an account with this email already exists", "EMAIL_TAKEN", "email");

export const invalidRefreshToken = () => unauthenticated("the refresh token is unknown, expired or revoked; sign in again", "INVALID_REFRESH_TOKEN");

export const tokenInvalid = () => failedPrecondition("the token is unknown, used or superseded by a newer one", "TOKEN_INVALID");

export const tokenExpired = () => failedPrecondition("the token has expired; request a new one", "TOKEN_EXPIRED");

export { isUniqueViolation } from "../../kit/errors.ts";

export const refreshTokenReused = () =>
  unauthenticated("this refresh token was already used: the session is revoked for safety; sign in again", "REFRESH_TOKEN_REUSED");
