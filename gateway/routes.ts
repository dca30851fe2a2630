/**
 * THE route table of the edge, derived from the generated contracts: every RPC
 * of every ecommerce service with its path, the service that owns it, its access
 * policy and whether browsers may reach it. The TypeScript edge (edge.ts) and the
 * production Envoy config (generate-envoy.ts -> envoy.yaml) are both built from
 * it, together with the edge policy below, so they cannot drift apart.
 *
 * Exposure rules:
 * - PUBLIC, CUSTOMER and ADMIN RPCs are exposed at their canonical path
 *   `/<package>.<Service>/<Method>` and forwarded to the service owning the package.
 * - INTERNAL RPCs are never exposed (the edge answers 404 as for an unknown path),
 *   nor are RPCs that declare no policy (the services refuse them anyway).
 * - ecommerce.common.v1.DeadLetterService is served by every service with event
 *   consumers under the same canonical path, so the path alone cannot say which
 *   service is meant. The edge exposes it once per service under
 *   `/admin/<service>/ecommerce.common.v1.DeadLetterService/<Method>` and strips
 *   the `/admin/<service>` prefix upstream; a Connect client reaches it with
 *   `baseUrl: "<edge>/admin/<service>"`. Its RPCs are ADMIN, enforced by the
 *   service. A service without consumers answers 404 (unimplemented).
 * - gRPC health and reflection are infrastructure: not in the table, not exposed.
 */
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { type DescFile, type DescMethod, getOption, hasOption } from "@bufbuild/protobuf";
import { MethodOptions_IdempotencyLevel } from "@bufbuild/protobuf/wkt";
import { AccessPolicy, access } from "../gen/ecommerce/common/v1/access_pb.js";
import { edgePort, type ServiceName, serviceCatalog, serviceNames } from "../kit/catalog.ts";
import { defaultListenerLimits, type ListenerLimits } from "../kit/listener.ts";

export type Access = "public" | "customer" | "admin" | "internal" | "unspecified";

export interface RpcRoute {
  /** Path the edge serves, e.g. "/ecommerce.user.v1.UserService/GetMyProfile". */
  path: string;
  /** Path on the upstream service (differs from `path` only for dead letters). */
  upstreamPath: string;
  /** Edge path prefix routed as one block to the upstream (Envoy prefix routes). */
  prefix: string;
  /** What `prefix` becomes upstream. */
  upstreamPrefix: string;
  /** The RPC, "ecommerce.user.v1.UserService/GetMyProfile". */
  rpc: string;
  /** The service that serves it. */
  service: ServiceName;
  access: Access;
  kind: DescMethod["methodKind"];
  /** Declared NO_SIDE_EFFECTS: Connect clients may call it with GET. */
  readOnly: boolean;
  /** Reachable through the edge. */
  exposed: boolean;
}

/** An outside party's plain-HTTP POST mapped onto an RPC (edgePolicy.webhooks). */
export interface WebhookRoute {
  prefix: string;
  service: ServiceName;
  rpc: string;
  /** The request field that gets the path's last segment. */
  nameField: string;
  /** Headers carrying the signature (the first present is sent as `signature`); none: the path's name is the credential, checked by the RPC. */
  signatureHeaders: readonly string[];
  /** False: the body is not forwarded (a one-click unsubscribe's body is a fixed form). Default: sent as `payload`. */
  payload?: boolean;
}

export interface RouteTable {
  /** Every RPC, in a stable order (files, services, methods as declared). */
  routes: readonly RpcRoute[];
  byPath: ReadonlyMap<string, RpcRoute>;
}

/** What the edge applies besides routing; shared by edge.ts and envoy.yaml. */
export const edgePolicy = {
  port: edgePort,
  maxBodyBytes: 1024 * 1024,
  /** Unary calls: the services cap client deadlines at 30 s too (MAX_TIMEOUT_MS). */
  upstreamTimeoutMs: 30_000,
  /** Server streams (WatchOrder) have no edge timeout; the service ends them (after one hour at most). */
  streamTimeoutMs: 0,
  /** Unary requests at least this slow are logged at warn (SLOW_CALL_MS, as the services). */
  slowCallMs: 1_000,
  /** Without EDGE_ALLOWED_ORIGINS, browsers on this machine only. */
  defaultOriginPattern: "^https?://(localhost|127\\.0\\.0\\.1|\\[::1\\])(:[0-9]+)?$",
  corsAllowMethods: ["GET", "POST", "OPTIONS"],
  corsAllowHeaders: [
    "content-type",
    "connect-protocol-version",
    "connect-timeout-ms",
    "grpc-timeout",
    "x-grpc-web",
    "x-user-agent",
    "authorization",
    "x-request-id",
    "traceparent",
  ],
  corsExposeHeaders: ["grpc-status", "grpc-message", "grpc-status-details-bin", "x-request-id"],
  corsMaxAgeSeconds: 7200,
  /**
   * Request headers only the mesh may set, dropped from what a client sends: the end user's
   * token on a call made on their behalf (only services send it), and what a client claims
   * about its address. The edge sets `forwardedHeaders` itself, from the connection.
   */
  strippedRequestHeaders: ["x-end-user-authorization", "forwarded", "x-real-ip", "x-client-ip", "true-client-ip", "x-forwarded-port", "x-forwarded-prefix"],
  /** Set by the edge from the connection, replacing any a client sent: x-forwarded-for is the TCP peer. */
  forwardedHeaders: ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"],
  /**
   * The public keys at the standard address: Auth's GetJwks called with Connect GET and JSON,
   * whose response body is a JWKS document. Cached as long as the verifiers cache keys
   * (5 min), below Auth's publish lead (a new key is listed 10 min before it signs).
   */
  jwks: {
    path: "/.well-known/jwks.json",
    rpc: "ecommerce.auth.v1.AuthService/GetJwks",
    query: "connect=v1&encoding=json&message=%7B%7D",
    cacheControl: "public, max-age=300",
  },
  /**
   * Plain-HTTP webhooks of outside providers (carriers, payment providers), which cannot speak
   * Connect: `POST <prefix><name>` becomes a Connect JSON call of `rpc` with the raw body as
   * `payload`, the last path segment as `nameField` and the first of `signatureHeaders` present
   * as `signature`. The answer is 200 with the response as JSON; an error is 400
   * (INVALID_ARGUMENT), 401 (UNAUTHENTICATED), 404 (NOT_FOUND) or 503 (anything else, so the
   * sender retries), with the Connect error JSON as body.
   */
  webhooks: [
    {
      prefix: "/webhooks/carriers/",
      service: "shipping",
      rpc: "ecommerce.shipping.v1.ShippingService/HandleCarrierWebhook",
      nameField: "carrier_code",
      signatureHeaders: ["carrier-signature", "sandbox-signature"],
    },
    {
      prefix: "/webhooks/payments/",
      service: "payment",
      rpc: "ecommerce.payment.v1.PaymentService/HandleProviderWebhook",
      nameField: "provider",
      // Stripe's header, and the sandbox's.
      signatureHeaders: ["stripe-signature", "sandbox-signature"],
    },
    {
      // RFC 8058 one-click unsubscribe: a mail client POSTs "List-Unsubscribe=One-Click" to the
      // List-Unsubscribe URL; the signed token in the path is all the RPC needs.
      prefix: "/unsubscribe/",
      service: "notification",
      rpc: "ecommerce.notification.v1.NotificationService/Unsubscribe",
      nameField: "token",
      signatureHeaders: [],
      payload: false,
    },
  ] satisfies readonly WebhookRoute[],
  /** Client connections: the services' limits, with fewer streams per client (browsers and partners, not peers). */
  listener: { ...defaultListenerLimits, http2MaxConcurrentStreams: 100 } satisfies ListenerLimits,
} as const;

export const deadLetterServiceName = "ecommerce.common.v1.DeadLetterService";

/** Edge prefix of a service's dead-letter admin RPCs. */
export const deadLetterPrefix = (service: ServiceName) => `/admin/${service}/${deadLetterServiceName}/`;

function accessOf(method: DescMethod): Access {
  const policy = hasOption(method, access) ? getOption(method, access) : AccessPolicy.UNSPECIFIED;
  switch (policy) {
    case AccessPolicy.PUBLIC:
      return "public";
    case AccessPolicy.CUSTOMER:
      return "customer";
    case AccessPolicy.ADMIN:
      return "admin";
    case AccessPolicy.INTERNAL:
      return "internal";
    default:
      return "unspecified";
  }
}

const exposedAccess: ReadonlySet<Access> = new Set(["public", "customer", "admin"]);

const ownerOfPackage = new Map<string, ServiceName>(serviceNames.map((name) => [serviceCatalog[name].protoPackage, name]));

/** Builds the table from generated file descriptors; throws on a service no catalog entry owns. */
export function buildRouteTable(files: readonly DescFile[]): RouteTable {
  const routes: RpcRoute[] = [];
  for (const file of files) {
    const pkg = file.proto.package;
    if (!pkg.startsWith("ecommerce.")) continue;
    for (const service of file.services) {
      for (const method of service.methods) {
        const rpc = `${service.typeName}/${method.name}`;
        const common = {
          rpc,
          access: accessOf(method),
          kind: method.methodKind,
          readOnly: method.idempotency === MethodOptions_IdempotencyLevel.NO_SIDE_EFFECTS,
        };
        const exposed = exposedAccess.has(common.access);
        if (service.typeName === deadLetterServiceName) {
          for (const owner of serviceNames) {
            const prefix = deadLetterPrefix(owner);
            routes.push({ ...common, path: `${prefix}${method.name}`, upstreamPath: `/${rpc}`, prefix, upstreamPrefix: `/${deadLetterServiceName}/`, service: owner, exposed });
          }
          continue;
        }
        const owner = ownerOfPackage.get(pkg);
        if (!owner) throw new Error(`${service.typeName}: no service in kit/catalog.ts owns package ${pkg}, so the edge cannot route it`);
        routes.push({ ...common, path: `/${rpc}`, upstreamPath: `/${rpc}`, prefix: `/${pkg}.`, upstreamPrefix: `/${pkg}.`, service: owner, exposed });
      }
    }
  }
  const byPath = new Map<string, RpcRoute>();
  for (const route of routes) {
    if (byPath.has(route.path)) throw new Error(`two RPCs at ${route.path}`);
    byPath.set(route.path, route);
  }
  return { routes, byPath };
}

const contractsDir = join(import.meta.dirname, "..", "gen", "ecommerce");

/** Every generated descriptor under gen/ecommerce, in a stable (sorted) order. */
export async function loadContractFiles(): Promise<DescFile[]> {
  const paths = readdirSync(contractsDir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && e.name.endsWith("_pb.js"))
    .map((e) => join(e.parentPath, e.name))
    .sort();
  const files: DescFile[] = [];
  for (const path of paths) {
    const mod = (await import(pathToFileURL(path).href)) as Record<string, unknown>;
    for (const [name, value] of Object.entries(mod)) if (name.startsWith("file_")) files.push(value as DescFile);
  }
  return files;
}

export async function loadRouteTable(): Promise<RouteTable> {
  return buildRouteTable(await loadContractFiles());
}
