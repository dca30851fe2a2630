/**
 * What every RPC of every implemented service inherits from the kit, checked by
 * walking the contracts' descriptors rather than a hand-written list, so a service
 * or an RPC added later is covered without touching this file:
 * - a NUL in any string field of the request is INVALID_ARGUMENT naming that field;
 * - a forged page token is INVALID_ARGUMENT INVALID_PAGE_TOKEN on page_token, on every
 *   RPC with a page_token field (DeadLetterService's included), whatever else the
 *   request lacks;
 * - an INTERNAL RPC refuses the credential of a service its allowed_callers does not
 *   name (CALLER_NOT_ALLOWED) and any user's token (INTERNAL_ONLY).
 * Each call carries the credential its access policy asks for, so the refusal is the
 * kit's answer to the request and not the auth interceptor's.
 */
import { create, type DescField, type DescMethod, type DescService, getOption, hasOption } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AccessPolicy, access, allowed_callers } from "../../gen/ecommerce/common/v1/access_pb.js";
import { serviceCatalog, type ServiceName, serviceNames } from "../../kit/catalog.ts";
import { errorFields } from "../../kit/errors.ts";
import type { AnyServiceDefinition } from "../../kit/server.ts";
import { failure } from "../../kit/testing/failure.ts";
import { startMesh, type TestMesh } from "../../kit/testing/mesh.ts";
import { TestIssuer } from "../../kit/testing/tokens.ts";
import { authService } from "../../services/auth/service.ts";
import { cartService } from "../../services/cart/service.ts";
import { discountService } from "../../services/discount/service.ts";
import { notificationService } from "../../services/notification/service.ts";
import { orderService } from "../../services/order/service.ts";
import { paymentService } from "../../services/payment/service.ts";
import { productService } from "../../services/product/service.ts";
import { shippingService } from "../../services/shipping/service.ts";
import { userService } from "../../services/user/service.ts";
import { loadRegistry } from "../contracts/registry.ts";

const implemented: AnyServiceDefinition[] = [authService, userService, productService, cartService, discountService, paymentService, shippingService, orderService, notificationService];
const issuer = new TestIssuer();
let mesh: TestMesh;

/** The RPCs each running service serves: its own package's services, and the kit's DeadLetterService when it consumes events. */
const served: { service: ServiceName; desc: DescService }[] = [];

beforeAll(async () => {
  const { registry } = await loadRegistry();
  const all = [...registry].filter((t): t is DescService => t.kind === "service" && t.typeName.startsWith("ecommerce."));
  for (const def of implemented) {
    const pkg = serviceCatalog[def.name].protoPackage;
    for (const desc of all) {
      if (desc.file.proto.package === pkg || (def.consumers && desc.typeName === "ecommerce.common.v1.DeadLetterService")) served.push({ service: def.name, desc });
    }
  }
  mesh = await startMesh(
    implemented.map((def) => issuer.trustedBy(def)),
    // Nothing is delivered or called out: the calls are refused before any handler runs. Small
    // pools: nine services share one PostgreSQL (max_connections 100) with other test runs.
    { SMTP_HOST: "127.0.0.1", SMTP_PORT: "9", SMTP_TLS: "off", PAYMENT_SANDBOX_WEBHOOK_URL: "off", DB_POOL_SIZE: "2" },
  );
});

afterAll(async () => {
  await mesh?.stop();
});

/** The credential an RPC's access policy asks for (an INTERNAL RPC: its first allowed caller's). */
async function credentialFor(method: DescMethod): Promise<Record<string, string>> {
  const policy = hasOption(method, access) ? getOption(method, access) : AccessPolicy.UNSPECIFIED;
  const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
  switch (policy) {
    case AccessPolicy.ADMIN:
      return bearer(await issuer.user(crypto.randomUUID(), ["customer", "admin"]));
    case AccessPolicy.INTERNAL:
      return bearer(await issuer.service(getOption(method, allowed_callers)[0] ?? "none"));
    case AccessPolicy.CUSTOMER:
      return bearer(await issuer.user(crypto.randomUUID()));
    default:
      return {};
  }
}

/** Calls one RPC over gRPC (with the credential its policy asks for, unless given one), reading a server stream's first answer. */
async function call(service: ServiceName, method: DescMethod, init: Record<string, unknown>, headers?: Record<string, string>): Promise<unknown> {
  const client = createClient(method.parent, createGrpcTransport({ baseUrl: mesh.url(service) })) as unknown as Record<string, (req: unknown, options: object) => unknown>;
  const fn = client[method.localName]!;
  const message = create(method.input, init as never);
  const options = { headers: headers ?? (await credentialFor(method)), timeoutMs: 10_000 };
  if (method.methodKind === "server_streaming") {
    for await (const m of fn(message, options) as AsyncIterable<unknown>) return m;
    return undefined;
  }
  return fn(message, options);
}

/**
 * The top-level string fields of a request, one per oneof (a oneof holds one value);
 * page_token is not text but a token, refused before validation (the second test).
 */
function stringFields(method: DescMethod): DescField[] {
  const fields: DescField[] = [];
  const oneofs = new Set<string>();
  for (const f of method.input.fields) {
    if (f.fieldKind !== "scalar" || f.scalar !== 9 /* STRING */ || f.name === "page_token") continue;
    if (f.oneof) {
      if (oneofs.has(f.oneof.name)) continue;
      oneofs.add(f.oneof.name);
    }
    fields.push(f);
  }
  return fields;
}

/** A oneof member is set as { case, value }; a plain field by its name. */
function withFields(fields: DescField[], value: (f: DescField) => unknown): Record<string, unknown> {
  const init: Record<string, unknown> = {};
  for (const f of fields) {
    if (f.oneof) init[f.oneof.localName] = { case: f.localName, value: value(f) };
    else init[f.localName] = value(f);
  }
  return init;
}

const unary = (m: DescMethod) => m.methodKind === "unary" || m.methodKind === "server_streaming";

describe("every RPC of every implemented service", () => {
  it("refuses a NUL in any string field as INVALID_ARGUMENT naming each such field", async () => {
    const checked = new Map<ServiceName, number>();
    for (const { service, desc } of served) {
      for (const method of desc.methods.filter(unary)) {
        const fields = stringFields(method);
        if (fields.length === 0) continue;
        const what = `${service}: ${desc.typeName}/${method.name}`;
        const refused = await failure(call(service, method, withFields(fields, () => "a\u0000b"))).catch((e: Error) => {
          throw new Error(`${what}: ${e.message}`);
        });
        expect(refused.code, `${what}: ${refused.message}`).toBe(3 /* INVALID_ARGUMENT */);
        const named = new Set(errorFields(refused.error));
        for (const f of fields) expect(named.has(f.name), `${what} names ${f.name}: ${refused.message}`).toBe(true);
        checked.set(service, (checked.get(service) ?? 0) + 1);
      }
    }
    // Every implemented service has RPCs taking text, and each was called.
    for (const def of implemented) expect(checked.get(def.name) ?? 0, def.name).toBeGreaterThan(1);
    console.log(`NUL refused by ${[...checked.values()].reduce((a, b) => a + b, 0)} RPCs: ${[...checked].map(([s, n]) => `${s} ${n}`).join(", ")}`);
  });

  it("refuses a forged page token as INVALID_PAGE_TOKEN on every RPC with a page_token", async () => {
    const forged = Buffer.from('{"k":"not json"}').toString("base64url");
    const checked = new Map<ServiceName, number>();
    let rpcs = 0;
    for (const { service, desc } of served) {
      for (const method of desc.methods.filter((m) => m.input.fields.some((f) => f.name === "page_token"))) {
        const what = `${service}: ${desc.typeName}/${method.name}`;
        const refused = await failure(call(service, method, { pageToken: forged })).catch((e: Error) => {
          throw new Error(`${what} accepted a forged token (${e.message})`);
        });
        expect({ code: refused.code, reason: refused.reason, field: refused.field }, `${what}: ${refused.message}`).toEqual({
          code: 3,
          reason: "INVALID_PAGE_TOKEN",
          field: "page_token",
        });
        checked.set(service, (checked.get(service) ?? 0) + 1);
        rpcs++;
      }
    }
    // The services' own lists (32 in the implemented contracts), and ListDeadLetters of each consumer.
    for (const def of implemented) expect(checked.get(def.name) ?? 0, def.name).toBeGreaterThanOrEqual(1);
    expect(rpcs).toBeGreaterThanOrEqual(32 + implemented.filter((d) => d.consumers).length);
    console.log(`forged page token refused by ${rpcs} RPCs: ${[...checked].map(([s, n]) => `${s} ${n}`).join(", ")}`);
  });

  it("refuses an INTERNAL RPC to services its allowed_callers do not name, and to users", async () => {
    const admin = { authorization: `Bearer ${await issuer.user(crypto.randomUUID(), ["customer", "admin"])}` };
    let rpcs = 0;
    for (const { service, desc } of served) {
      const def = implemented.find((d) => d.name === service)!;
      for (const method of desc.methods.filter(unary)) {
        if (!hasOption(method, access) || getOption(method, access) !== AccessPolicy.INTERNAL) continue;
        const name = `${desc.typeName}/${method.name}`;
        if (def.credentialExempt?.includes(name)) continue; // IssueServiceToken: how a service gets a credential
        const allowed = new Set(getOption(method, allowed_callers));
        const outsider = serviceNames.find((n) => !allowed.has(n))!;
        const what = `${service}: ${name}`;
        const asOutsider = await failure(call(service, method, {}, { authorization: `Bearer ${await issuer.service(outsider)}` }));
        expect({ code: asOutsider.code, reason: asOutsider.reason }, `${what} as ${outsider}: ${asOutsider.message}`).toEqual({ code: 7, reason: "CALLER_NOT_ALLOWED" });
        const asUser = await failure(call(service, method, {}, admin));
        expect({ code: asUser.code, reason: asUser.reason }, `${what} as an admin: ${asUser.message}`).toEqual({ code: 7, reason: "INTERNAL_ONLY" });
        rpcs++;
      }
    }
    expect(rpcs).toBeGreaterThan(10);
    console.log(`INTERNAL RPCs refused to outsiders and users: ${rpcs}`);
  });
});
