/**
 * The route table against the contracts (every RPC accounted for, INTERNAL ones
 * never exposed) and envoy.yaml against the route table (current, and routing
 * each path where the TypeScript edge does).
 */
import { readFileSync } from "node:fs";
import { type DescFile, getOption, hasOption } from "@bufbuild/protobuf";
import { beforeAll, describe, expect, it } from "vitest";
import { AccessPolicy, access } from "../gen/ecommerce/common/v1/access_pb.js";
import { type ServiceName, serviceCatalog, serviceNames } from "../kit/catalog.ts";
import { loadGeneratedFiles } from "../test/contracts/registry.ts";
import { envoyConfigPath, renderEnvoyYaml } from "./generate-envoy.ts";
import { buildRouteTable, deadLetterPrefix, deadLetterServiceName, edgePolicy, loadRouteTable, type RouteTable } from "./routes.ts";

let files: DescFile[];
let table: RouteTable;

beforeAll(async () => {
  files = await loadGeneratedFiles();
  table = await loadRouteTable();
});

/** Every RPC of the contracts, read independently of routes.ts. */
function contractRpcs() {
  const owner = new Map<string, ServiceName>(serviceNames.map((n) => [serviceCatalog[n].protoPackage, n]));
  return files
    .filter((f) => f.proto.package.startsWith("ecommerce."))
    .flatMap((f) =>
      f.services.flatMap((s) =>
        s.methods.map((m) => ({
          path: `/${s.typeName}/${m.name}`,
          serviceType: s.typeName,
          owner: owner.get(f.proto.package),
          policy: hasOption(m, access) ? getOption(m, access) : AccessPolicy.UNSPECIFIED,
        })),
      ),
    );
}

describe("route table", () => {
  it("exposes every PUBLIC, CUSTOMER and ADMIN RPC of every service at its canonical path, routed to its owner", () => {
    const rpcs = contractRpcs().filter((r) => r.serviceType !== deadLetterServiceName);
    expect(rpcs.length).toBeGreaterThan(150);
    for (const rpc of rpcs) {
      const route = table.byPath.get(rpc.path);
      expect(route, rpc.path).toBeDefined();
      expect(route!.service, rpc.path).toBe(rpc.owner);
      expect(route!.upstreamPath).toBe(rpc.path);
      expect(route!.exposed, rpc.path).toBe([AccessPolicy.PUBLIC, AccessPolicy.CUSTOMER, AccessPolicy.ADMIN].includes(rpc.policy));
    }
    for (const name of serviceNames) expect(table.routes.some((r) => r.exposed && r.service === name && r.path.startsWith(`/${serviceCatalog[name].protoPackage}.`)), name).toBe(true);
  });

  it("never exposes an INTERNAL RPC", () => {
    const internal = contractRpcs().filter((r) => r.policy === AccessPolicy.INTERNAL);
    expect(internal.length).toBeGreaterThan(10);
    for (const rpc of internal) expect(table.byPath.get(rpc.path)?.exposed, rpc.path).toBe(false);
    expect(table.routes.filter((r) => r.exposed).every((r) => r.access !== "internal" && r.access !== "unspecified")).toBe(true);
    for (const path of [
      "/ecommerce.auth.v1.AuthService/IssueServiceToken",
      "/ecommerce.user.v1.UserService/GetAddress",
      "/ecommerce.product.v1.InventoryService/ReserveStock",
      "/ecommerce.payment.v1.PaymentService/AuthorizePayment",
    ]) {
      expect(table.byPath.get(path), path).toMatchObject({ access: "internal", exposed: false });
    }
  });

  it("exposes each service's DeadLetterService to admins under /admin/<service>, and no health or reflection", () => {
    const methods = contractRpcs().filter((r) => r.serviceType === deadLetterServiceName);
    expect(methods.length).toBe(2);
    for (const name of serviceNames) {
      for (const m of methods) {
        const route = table.byPath.get(`${deadLetterPrefix(name)}${m.path.split("/").pop()}`);
        expect(route).toMatchObject({ service: name, upstreamPath: m.path, access: "admin", exposed: true });
      }
    }
    expect(table.byPath.has(`/${deadLetterServiceName}/ListDeadLetters`)).toBe(false);
    expect(table.routes.some((r) => r.path.includes("grpc."))).toBe(false);
    expect(table.byPath.get("/ecommerce.order.v1.OrderService/WatchOrder")).toMatchObject({ kind: "server_streaming", readOnly: true, exposed: true });
  });

  it("refuses to build when a package has no owning service", () => {
    const stray = { ...files.find((f) => f.services.length > 0 && f.proto.package.startsWith("ecommerce.user."))! };
    const renamed = { ...stray, proto: { ...stray.proto, package: "ecommerce.loyalty.v1" } } as DescFile;
    expect(() => buildRouteTable([renamed])).toThrow(/ecommerce\.loyalty\.v1/);
  });
});

describe("envoy.yaml", () => {
  type EnvoyRoute = {
    name: string;
    match: { path?: string; prefix?: string };
    route?: { cluster: string; prefix_rewrite?: string; timeout: string };
    direct_response?: { status: number; body: { inline_string: string } };
  };
  const parse = (text: string) => JSON.parse(text.replace(/^#.*\n/gm, "")) as Record<string, any>;
  const hcmOf = (config: Record<string, any>) =>
    config.static_resources.listeners[0].filter_chains[0].filters.find((f: { name: string }) => f.name === "envoy.filters.network.http_connection_manager").typed_config;

  it("is what gateway/generate-envoy.ts writes from the current route table (run it when this fails)", () => {
    expect(readFileSync(envoyConfigPath, "utf8")).toBe(renderEnvoyYaml(table));
  });

  it("routes every path where the TypeScript edge does: exposed RPCs to their service, everything else 404", () => {
    const config = parse(readFileSync(envoyConfigPath, "utf8"));
    const routes = hcmOf(config).route_config.virtual_hosts[0].routes as EnvoyRoute[];
    // Envoy takes the first route that matches.
    const first = (path: string) => routes.find((r) => (r.match.path !== undefined ? r.match.path === path : path.startsWith(r.match.prefix!)))!;
    for (const route of table.routes) {
      const hit = first(route.path);
      if (route.exposed) {
        expect(hit.route?.cluster, route.path).toBe(route.service);
        const rewritten = hit.route!.prefix_rewrite === undefined ? route.path : hit.route!.prefix_rewrite + route.path.slice((hit.match.prefix ?? hit.match.path)!.length);
        expect(rewritten).toBe(route.upstreamPath);
        expect(hit.route!.timeout).toBe(route.kind === "unary" ? `${edgePolicy.upstreamTimeoutMs / 1000}s` : "0s");
      } else {
        expect(hit.direct_response?.status, route.path).toBe(404);
        expect(JSON.parse(hit.direct_response!.body.inline_string)).toMatchObject({ code: "not_found" });
      }
    }
    for (const path of ["/grpc.health.v1.Health/Check", "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", `/${deadLetterServiceName}/ListDeadLetters`, "/nope"]) {
      expect(first(path).direct_response?.status, path).toBe(404);
    }
  });

  it("has the plain-HTTP webhook routes of edgePolicy.webhooks: POST <prefix><name> translated onto the RPC of their service", () => {
    const routes = hcmOf(parse(readFileSync(envoyConfigPath, "utf8"))).route_config.virtual_hosts[0].routes as Array<Record<string, any>>;
    const catchAll = routes.findIndex((r) => r.match.prefix === "/");
    expect(edgePolicy.webhooks.map((w) => w.prefix)).toEqual(["/webhooks/carriers/", "/webhooks/payments/", "/unsubscribe/"]);
    for (const hook of edgePolicy.webhooks) {
      // The RPC is a PUBLIC one of the hook's service (its signature, or the signed token in the path, is the authentication).
      expect(table.byPath.get(`/${hook.rpc}`)).toMatchObject({ service: hook.service, access: "public", exposed: true, kind: "unary" });
      const at = routes.findIndex((r) => r.match.prefix === hook.prefix);
      expect(at, hook.prefix).toBeGreaterThanOrEqual(0);
      expect(at).toBeLessThan(catchAll);
      // No earlier route takes the webhook's paths.
      expect(routes.slice(0, at).some((r) => r.match.prefix !== undefined && hook.prefix.startsWith(r.match.prefix))).toBe(false);
      const route = routes[at]!;
      expect(route.match.headers).toEqual([{ name: ":method", string_match: { exact: "POST" } }]);
      expect(route.route).toMatchObject({ cluster: hook.service, timeout: `${edgePolicy.upstreamTimeoutMs / 1000}s`, regex_rewrite: { pattern: { regex: "^.*$" }, substitution: `/${hook.rpc}` } });
      const script: string = route.typed_per_filter_config["envoy.filters.http.lua"].source_code.inline_string;
      expect(route.typed_per_filter_config["envoy.filters.http.lua"]["@type"]).toBe("type.googleapis.com/envoy.extensions.filters.http.lua.v3.LuaPerRoute");
      // The same translation as the TypeScript edge: the name field, the signature headers in order, the status mapping.
      expect(script).toContain(`local prefix = "${hook.prefix}"`);
      expect(script).toContain(`local name_field = "${hook.nameField}"`);
      expect(script).toContain(`local signature_headers = { ${hook.signatureHeaders.map((h) => `"${h}"`).join(", ")} }`);
      expect(script).toContain('local statuses = { invalid_argument = "400", unauthenticated = "401", not_found = "404" }');
      const payload = /function envoy_on_request\(handle\)[\s\S]*"payload":"' \.\. handle:base64Escape\(body:getBytes\(0, body:length\(\)\)\)/;
      if (hook.payload === false) expect(script).not.toMatch(payload);
      else expect(script).toMatch(payload);
      // Signed hooks refuse a POST without a signature header; unsigned ones send no signature field.
      expect(script.includes('"signature":')).toBe(hook.signatureHeaders.length > 0);
      expect(script.includes('"401", "unauthenticated"')).toBe(hook.signatureHeaders.length > 0);
      expect(script).toContain('headers:replace("connect-protocol-version", "1")');
      expect(script).toContain('headers:replace(":status", statuses[code] or "503")');
    }
  });

  it("sets x-forwarded-for to the TCP peer, trusting no hop and appending nothing the client sent", () => {
    const hcm = hcmOf(parse(readFileSync(envoyConfigPath, "utf8")));
    expect(hcm).toMatchObject({ use_remote_address: true, xff_num_trusted_hops: 0, skip_xff_append: true });
    expect(hcm.route_config.request_headers_to_add).toContainEqual({
      header: { key: "x-forwarded-for", value: "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%" },
      append_action: "OVERWRITE_IF_EXISTS_OR_ADD",
    });
  });

  it("serves /.well-known/jwks.json from Auth's GetJwks over Connect GET, with a short cache", () => {
    const routes = hcmOf(parse(readFileSync(envoyConfigPath, "utf8"))).route_config.virtual_hosts[0].routes;
    const jwks = routes.find((r: EnvoyRoute) => r.match.path === "/.well-known/jwks.json");
    expect(jwks.route).toMatchObject({ cluster: "auth", prefix_rewrite: "/ecommerce.auth.v1.AuthService/GetJwks?connect=v1&encoding=json&message=%7B%7D" });
    expect(jwks.response_headers_to_add[0].header).toEqual({ key: "cache-control", value: "public, max-age=300" });
  });

  it("has the listener, filters, limits, CORS and one HTTP/2 cluster per service of docker-compose", () => {
    const config = parse(readFileSync(envoyConfigPath, "utf8"));
    expect(config.static_resources.listeners[0].address.socket_address.port_value).toBe(8080);
    const hcm = hcmOf(config);
    expect(hcm.http_filters.map((f: { name: string }) => f.name)).toEqual([
      "envoy.filters.http.grpc_web",
      "envoy.filters.http.cors",
      "envoy.filters.http.buffer",
      "envoy.filters.http.lua",
      "envoy.filters.http.router",
    ]);
    // The Lua filter has no code of its own: it runs only on the webhook routes.
    expect(hcm.http_filters[3].typed_config["@type"]).toBe("type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua");
    expect(hcm.http_filters[3].typed_config.default_source_code.inline_string).not.toMatch(/envoy_on_/);
    expect(hcm.http_filters[2].typed_config.max_request_bytes).toBe(edgePolicy.maxBodyBytes);
    expect(hcm.route_config.request_headers_to_remove).toEqual(expect.arrayContaining(["x-end-user-authorization", "forwarded", "x-real-ip"]));
    expect(config.static_resources.listeners[0].filter_chains[0].filters[0].typed_config.max_connections).toBe(edgePolicy.listener.maxConnections);
    expect(hcm.http2_protocol_options.max_concurrent_streams).toBe(edgePolicy.listener.http2MaxConcurrentStreams);
    expect(hcm.request_headers_timeout).toBe(`${edgePolicy.listener.headersTimeoutMs / 1000}s`);
    const cors = hcm.route_config.virtual_hosts[0].typed_per_filter_config["envoy.filters.http.cors"];
    expect(cors.allow_headers.split(", ")).toEqual(expect.arrayContaining(["content-type", "connect-protocol-version", "grpc-timeout", "x-grpc-web", "authorization", "traceparent"]));
    expect(cors.expose_headers.split(", ")).toEqual(["grpc-status", "grpc-message", "grpc-status-details-bin", "x-request-id"]);
    const compose = readFileSync(new URL("../docker-compose.yml", import.meta.url), "utf8");
    const clusters = config.static_resources.clusters as Array<Record<string, any>>;
    expect(clusters.map((c) => c.name)).toEqual(serviceNames);
    for (const c of clusters) {
      const address = c.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address;
      expect(address).toEqual({ address: c.name, port_value: serviceCatalog[c.name as ServiceName].port });
      expect(compose).toMatch(new RegExp(`^  ${c.name}:$`, "m"));
      expect(c.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].explicit_http_config).toHaveProperty("http2_protocol_options");
    }
  });
});
