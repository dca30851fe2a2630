/**
 * Who is calling. Set by the auth interceptor from the verified access token and
 * read by handlers through `callerOf(ctx)`, never from request fields.
 */
import { createContextKey, type HandlerContext } from "@connectrpc/connect";
import { currentScope } from "../context.ts";
import { unauthenticated } from "../errors.ts";

export interface UserPrincipal {
  kind: "user";
  userId: string;
  email: string;
  roles: string[];
  /** The raw access token, forwarded on calls made on the user's behalf. */
  token: string;
}

export interface ServicePrincipal {
  kind: "service";
  service: string;
  /** The end user a service call is made for, when the caller forwarded one. */
  onBehalfOf?: UserPrincipal;
}

export type Principal = UserPrincipal | ServicePrincipal;

/** JWT claims of the tokens Auth issues (issuer, audience and key id are fixed by tokens.ts). */
export const tokenIssuer = "ecommerce-auth";
export const tokenAudience = "ecommerce";
export const adminRole = "admin";
export const customerRole = "customer";
export const serviceRole = "service";

export const callerKey = createContextKey<Principal | undefined>(undefined, { description: "verified caller" });

export function callerOf(ctx: HandlerContext): Principal | undefined {
  return ctx.values.get(callerKey);
}

/** The signed-in user, or UNAUTHENTICATED. For CUSTOMER handlers: the data owner is always this user. */
export function requireUser(ctx: HandlerContext): UserPrincipal {
  const caller = ctx.values.get(callerKey);
  if (caller?.kind === "user") return caller;
  if (caller?.kind === "service" && caller.onBehalfOf) return caller.onBehalfOf;
  throw unauthenticated("sign in first: this call needs an access token (Authorization: Bearer <token>)");
}

export function isAdmin(p: Principal | undefined): boolean {
  return p?.kind === "user" && p.roles.includes(adminRole);
}

// The caller is also kept in async context (the call's scope, kit/context.ts, set by kit/call.ts), so outbound
// calls made while handling a request can forward the end user's token without threading it through.
export function currentCaller(): Principal | undefined {
  return currentScope()?.caller;
}
