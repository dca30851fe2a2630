/**
 * Properties every contract of the mesh must have, checked over the generated
 * descriptors: a policy on every RPC, reads marked side-effect free, a subject
 * on every event, validation rules on every request input, no secrets or
 * floating-point money in what clients see, and the surface ARCHITECTURE.md names.
 */
import {
  create,
  type DescField,
  type DescMessage,
  type DescMethod,
  type DescService,
  getOption,
  hasOption,
} from "@bufbuild/protobuf";
import { FieldRulesSchema, Ignore, field as fieldRules } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { createValidator } from "@bufbuild/protovalidate";
import { MethodOptions_IdempotencyLevel } from "@bufbuild/protobuf/wkt";
import { beforeAll, describe, expect, it } from "vitest";
import { AccessPolicy, access } from "../../gen/ecommerce/common/v1/access_pb.js";
import { event, event_stream } from "../../gen/ecommerce/common/v1/event_pb.js";
import { MoneySchema } from "../../gen/ecommerce/common/v1/money_pb.js";
import { loadRegistry } from "./registry.ts";
import { readOnlyPrefixes, requiredRpcs, requiredSubjects, serverStreams } from "./surface.ts";

let services: DescService[] = [];
let events: DescMessage[] = [];
let allMessages: DescMessage[] = [];

beforeAll(async () => {
  const { registry } = await loadRegistry();
  for (const type of registry) {
    if (type.kind === "service") services.push(type);
    if (type.kind === "message") allMessages.push(type);
  }
  services = services.filter((s) => s.typeName.startsWith("ecommerce."));
  events = allMessages.filter((m) => hasOption(m, event));
});

const methods = () => services.flatMap((s) => s.methods);
const packageOf = (s: DescService) => s.file.proto.package;

/** Messages reachable from a root through message fields, excluding google.protobuf types. */
function reachable(root: DescMessage): DescMessage[] {
  const seen = new Map<string, DescMessage>();
  const visit = (m: DescMessage) => {
    if (seen.has(m.typeName) || m.typeName.startsWith("google.protobuf.")) return;
    seen.set(m.typeName, m);
    for (const f of m.fields) {
      if (f.fieldKind === "message" || (f.fieldKind === "list" && f.listKind === "message")) visit(f.message!);
      if (f.fieldKind === "map" && f.mapKind === "message") visit(f.message!);
    }
  };
  visit(root);
  return [...seen.values()];
}

function rulesOf(f: DescField) {
  return hasOption(f, fieldRules) ? getOption(f, fieldRules) : create(FieldRulesSchema);
}

describe("every RPC of the mesh", () => {
  it("loads ten service packages", () => {
    expect(new Set(services.map(packageOf)).size).toBeGreaterThanOrEqual(10);
  });

  it("declares an access policy", () => {
    const missing = methods().filter((m) => getOption(m, access) === AccessPolicy.UNSPECIFIED);
    expect(missing.map((m) => `${m.parent.typeName}.${m.name}`)).toEqual([]);
  });

  it("marks reads as NO_SIDE_EFFECTS", () => {
    const reads = methods().filter((m) => readOnlyPrefixes.some((p) => m.name.replace(/^Admin/, "").startsWith(p)) && m.methodKind === "unary");
    expect(reads.length).toBeGreaterThan(30);
    const unmarked = reads.filter((m) => m.idempotency !== MethodOptions_IdempotencyLevel.NO_SIDE_EFFECTS);
    expect(unmarked.map((m) => `${m.parent.typeName}.${m.name}`)).toEqual([]);
  });

  it("uses its own request and response messages", () => {
    for (const m of methods()) {
      expect(m.input.name, `${m.parent.typeName}.${m.name}`).toBe(`${m.name}Request`);
      expect(m.output.name, `${m.parent.typeName}.${m.name}`).toBe(`${m.name}Response`);
    }
  });

  it("covers the API surface of ARCHITECTURE.md", () => {
    const missing: string[] = [];
    for (const [pkg, names] of Object.entries(requiredRpcs)) {
      const have = new Set(services.filter((s) => packageOf(s) === pkg).flatMap((s) => s.methods.map((m) => m.name)));
      for (const name of names) if (!have.has(name)) missing.push(`${pkg}: ${name}`);
    }
    expect(missing).toEqual([]);
  });

  it("streams where the design says so", () => {
    for (const name of serverStreams) {
      const [svc, rpc] = [name.slice(0, name.lastIndexOf(".")), name.slice(name.lastIndexOf(".") + 1)];
      const m = services.find((s) => s.typeName === svc)?.methods.find((x) => x.name === rpc);
      expect(m?.methodKind, name).toBe("server_streaming");
    }
  });

  it("bounds every string, list and map of every request", () => {
    const problems: string[] = [];
    const inputs = new Map(methods().map((m) => [m.input.typeName, m.input]));
    for (const root of inputs.values()) {
      for (const msg of reachable(root)) {
        for (const f of msg.fields) {
          const r = rulesOf(f);
          const where = `${msg.typeName}.${f.name}`;
          if (r.ignore === Ignore.ALWAYS) continue; // output-only field of a resource used in an update
          if (f.fieldKind === "list" && r.type.case !== "repeated") problems.push(`${where}: repeated without max_items`);
          if (f.fieldKind === "list" && r.type.case === "repeated" && r.type.value.maxItems === undefined)
            problems.push(`${where}: repeated without max_items`);
          if (f.fieldKind === "map" && (r.type.case !== "map" || r.type.value.maxPairs === undefined))
            problems.push(`${where}: map without max_pairs`);
          if (f.fieldKind === "scalar" && f.scalar === 9 /* string */) {
            const s = r.type.case === "string" ? r.type.value : undefined;
            const bounded = s && (s.maxLen !== undefined || s.len !== undefined || s.pattern !== undefined ||
              s.in.length > 0 || s.wellKnown.case !== undefined || s.const !== undefined);
            if (!bounded && r.cel.length === 0) problems.push(`${where}: string without a length or format rule`);
          }
          if (f.fieldKind === "list" && f.listKind === "scalar" && f.scalar === 9 && r.type.case === "repeated") {
            const items = r.type.value.items;
            const s = items?.type.case === "string" ? items.type.value : undefined;
            if (!s || (s.maxLen === undefined && s.pattern === undefined && s.wellKnown.case === undefined && s.in.length === 0))
              problems.push(`${where}: repeated string items without a length or format rule`);
          }
        }
      }
    }
    expect(problems).toEqual([]);
  });

  it("never returns secrets to clients", () => {
    const secret = /password|_hash$|^hash$|provider_token|secret|private_key/;
    const leaks: string[] = [];
    for (const m of methods().filter((x) => getOption(x, access) !== AccessPolicy.INTERNAL)) {
      for (const msg of reachable(m.output)) {
        for (const f of msg.fields) if (secret.test(f.name)) leaks.push(`${m.name} -> ${msg.typeName}.${f.name}`);
      }
    }
    expect(leaks).toEqual([]);
  });

  it("never carries money in floating point", () => {
    const moneyish = /price|amount|total|cost|subtotal|fee|budget|balance/;
    const floats = allMessages
      .filter((m) => m.typeName.startsWith("ecommerce."))
      .flatMap((m) => m.fields.map((f) => ({ m, f })))
      .filter(({ f }) => moneyish.test(f.name) && (f.scalar === 1 || f.scalar === 2)); // DOUBLE, FLOAT
    expect(floats.map(({ m, f }) => `${m.typeName}.${f.name}`)).toEqual([]);
  });
});

describe("every event of the mesh", () => {
  it("declares a unique <domain>.<event> subject", () => {
    const subjects = events.map((m) => getOption(m, event).subject);
    for (const s of subjects) expect(s).toMatch(/^[a-z][a-z_]*\.[a-z][a-z_]*$/);
    expect(new Set(subjects).size).toBe(subjects.length);
  });

  it("includes every subject ARCHITECTURE.md names", () => {
    const subjects = new Set(events.map((m) => getOption(m, event).subject));
    expect(requiredSubjects.filter((s) => !subjects.has(s))).toEqual([]);
  });

  it("starts with event_id and occurred_at", () => {
    for (const m of events) {
      const [id, at] = [m.fields.find((f) => f.name === "event_id"), m.fields.find((f) => f.name === "occurred_at")];
      expect(id?.number, `${m.typeName}.event_id`).toBe(1);
      expect(id?.fieldKind === "scalar" && id.scalar === 9, `${m.typeName}.event_id is a string`).toBe(true);
      expect(at?.number, `${m.typeName}.occurred_at`).toBe(2);
      expect(at?.message?.typeName, `${m.typeName}.occurred_at`).toBe("google.protobuf.Timestamp");
      expect(m.fields.length, `${m.typeName} carries the subject's ids`).toBeGreaterThan(2);
    }
  });

  it("lives in its producer's events.proto, which names one stream per service", () => {
    const streams = new Map<string, string>();
    for (const m of events) {
      expect(m.file.name, m.typeName).toMatch(/^ecommerce\/[a-z]+\/v1\/events$/);
      expect(hasOption(m.file, event_stream), `${m.file.name}.proto has no event_stream`).toBe(true);
      const stream = getOption(m.file, event_stream);
      expect(stream).toMatch(/^[A-Z]+_EVENTS$/);
      const owner = streams.get(stream) ?? m.file.name;
      expect(owner, `stream ${stream} declared by two files`).toBe(m.file.name);
      streams.set(stream, m.file.name);
    }
    expect(streams.size).toBeGreaterThanOrEqual(8);
  });
});

describe("validation rules in the contracts", () => {
  it("are enforced at run time by protovalidate", () => {
    const validator = createValidator();
    const ok = validator.validate(MoneySchema, create(MoneySchema, { amountMinor: 1234n, currencyCode: "EUR" }));
    expect(ok.kind).toBe("valid");
    const bad = validator.validate(MoneySchema, create(MoneySchema, { amountMinor: 1n, currencyCode: "euro" }));
    expect(bad.kind).toBe("invalid");
    if (bad.kind === "invalid") expect(bad.violations.map((v) => v.field.map((f) => ("name" in f ? f.name : "")).join("."))).toEqual(["currency_code"]);
  });

  it("reject a bad request of every service package with a field path", () => {
    // An empty request to each unary RPC whose input has a required/uuid/min_len field must be invalid.
    const validator = createValidator();
    const checked = new Set<string>();
    for (const m of methods() as DescMethod[]) {
      const result = validator.validate(m.input, create(m.input));
      if (result.kind === "invalid") {
        checked.add(packageOf(m.parent));
        for (const v of result.violations) expect(v.field.length, `${m.name}: violation without a field`).toBeGreaterThan(0);
      }
      expect(result.kind, `${m.input.typeName}: ${result.kind === "error" ? String(result.error) : ""}`).not.toBe("error");
    }
    expect(checked.size).toBeGreaterThanOrEqual(10);
  });
});

describe("the documentation of the contracts", () => {
  it("lists every event subject in docs/contracts.md", async () => {
    const { readFileSync } = await import("node:fs");
    const { join } = await import("node:path");
    const doc = readFileSync(join(import.meta.dirname, "..", "..", "docs", "contracts.md"), "utf8");
    const missing = events.map((m) => getOption(m, event).subject).filter((subject) => !doc.includes(subject));
    expect(missing).toEqual([]);
  });
});
