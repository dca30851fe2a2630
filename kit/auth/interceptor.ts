/**
 * The one access check of the kit's call interceptor (kit/call.ts): verifies the bearer
 * token and enforces the access policy each RPC declares in its contract
 * (ecommerce.common.v1.access). An RPC without a policy is refused: the default is deny.
 */
import { type DescMethod, getOption, hasOption } from "@bufbuild/protobuf";
import { AccessPolicy, access, allowed_callers } from "../../gen/ecommerce/common/v1/access_pb.js";
import { permissionDenied, unauthenticated } from "../errors.ts";
import { adminRole, type Principal } from "./principal.ts";
import type { TokenVerifier } from "./verifier.ts";

/** Header carrying the end user's token on a service-to-service call made on their behalf. */
export const onBehalfOfHeader = "x-end-user-authorization";

/** gRPC's own health and reflection services carry no policy and are open (infrastructure). */
const openPackages = ["grpc.health.v1.", "grpc.reflection."];

function bearer(value: string | null): string | undefined {
  if (!value) return undefined;
  const m = /^Bearer\s+(\S+)$/i.exec(value.trim());
  if (!m) throw unauthenticated("the Authorization header must be 'Bearer <token>'", "TOKEN_INVALID");
  return m[1];
}

/** Checks one call against its RPC's policy: the verified caller (undefined for a PUBLIC call without a token), or the refusal thrown. */
export type Authorize = (req: { header: Headers }) => Promise<Principal | undefined>;

/**
 * What the contract says of each RPC, read once per method rather than per call: the check
 * of a call against the RPC's policy, or undefined for open RPCs (no token is looked at).
 * @param credentialExempt RPCs ("pkg.Service/Method") reachable without a token
 *   although INTERNAL: only Auth's IssueServiceToken, which is how a service gets one.
 */
export function accessPolicies(verifier: TokenVerifier, credentialExempt: string[] = []): (method: DescMethod) => Authorize | undefined {
  // Per service: which RPCs are exempt is the service's own choice.
  const checks = new WeakMap<DescMethod, Authorize | null>();
  return (method) => {
    let check = checks.get(method);
    if (check === undefined) checks.set(method, (check = checkOf(verifier, method, credentialExempt)));
    return check ?? undefined;
  };
}

function checkOf(verifier: TokenVerifier, method: DescMethod, credentialExempt: string[]): Authorize | null {
  const name = `${method.parent.typeName}/${method.name}`;
  if (openPackages.some((p) => method.parent.typeName.startsWith(p)) || credentialExempt.includes(name)) return null;
  const policy = hasOption(method, access) ? getOption(method, access) : AccessPolicy.UNSPECIFIED;
  // For INTERNAL RPCs: the services whose credential may call it (allowed_callers).
  const callers: ReadonlySet<string> = new Set(hasOption(method, allowed_callers) ? getOption(method, allowed_callers) : []);
  return async (req) => {
    if (policy === AccessPolicy.UNSPECIFIED) {
      throw permissionDenied(`${name} declares no access policy and is refused`, "NO_ACCESS_POLICY");
    }

    const token = bearer(req.header.get("authorization"));
    let caller: Principal | undefined = token ? await verifier.verify(token) : undefined;

    if (caller?.kind === "service") {
      const endUser = bearer(req.header.get(onBehalfOfHeader));
      if (endUser) {
        const user = await verifier.verify(endUser);
        if (user.kind === "user") caller = { ...caller, onBehalfOf: user };
      }
    }

    switch (policy) {
      case AccessPolicy.PUBLIC:
        break;
      case AccessPolicy.CUSTOMER:
        if (!caller) throw unauthenticated("sign in first: this call needs an access token (Authorization: Bearer <token>)");
        if (caller.kind !== "user" && !caller.onBehalfOf) throw permissionDenied("this call acts for a signed-in customer");
        break;
      case AccessPolicy.ADMIN:
        if (!caller) throw unauthenticated("sign in first: this call needs an admin's access token");
        if (caller.kind !== "user" || !caller.roles.includes(adminRole)) {
          throw permissionDenied("this call needs the admin role", "ADMIN_ROLE_REQUIRED");
        }
        break;
      case AccessPolicy.INTERNAL:
        if (!caller) throw unauthenticated("this call is internal to the mesh and needs a service credential", "SERVICE_CREDENTIAL_REQUIRED");
        if (caller.kind !== "service") throw permissionDenied("this call is internal to the mesh", "INTERNAL_ONLY");
        // The contract names the services that may call it (none named: nobody may).
        if (!callers.has(caller.service)) {
          throw permissionDenied(
            `the ${caller.service} service may not call ${name}; allowed callers: ${[...callers].join(", ") || "none"}`,
            "CALLER_NOT_ALLOWED",
          );
        }
        break;
      default:
        throw permissionDenied(`unknown access policy ${policy as number}`, "NO_ACCESS_POLICY");
    }
    return caller;
  };
}
