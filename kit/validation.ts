/**
 * The kit's call interceptor (kit/call.ts) applies the contracts' protovalidate rules to every request
 * message, and refuses control characters in every string: INVALID_ARGUMENT with one
 * BadRequest field violation per invalid field, before any handler runs.
 */
import type { DescField, DescMessage, Message } from "@bufbuild/protobuf";
import { createValidator, type Violation } from "@bufbuild/protovalidate";
import { Code, ConnectError, type StreamRequest, type UnaryRequest } from "@connectrpc/connect";
import { domainError } from "./errors.ts";

const validator = createValidator();

function pathOf(v: Violation): string {
  return v.field
    .map((f) => {
      if (f.kind === "list_sub") return `[${f.index}]`;
      if (f.kind === "map_sub") return `[${quote(String(f.key))}]`;
      return `.${f.name}`;
    })
    .join("")
    .replace(/^\./, "");
}

/** A map key as it appears in a field path; escapes what JSON leaves raw (C1 controls). */
function quote(key: string): string {
  return JSON.stringify(key).replace(/[\u007f-\u009f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

// Text every string field must be (docs/contracts.md, "Text"): no NUL (PostgreSQL
// refuses it in text columns), and no other C0/C1 control character except tab, line
// feed and carriage return. Unpaired UTF-16 surrogates never get this far: protobuf-es
// decodes binary strings as UTF-8 (an encoded surrogate becomes U+FFFD) and refuses
// them in JSON ("invalid UTF8", INVALID_ARGUMENT).
const controlCharacter = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]/;

function textProblem(s: string): string | undefined {
  if (s.length === 0) return undefined;
  const m = controlCharacter.exec(s);
  if (!m) return undefined;
  const at = `U+${m[0].charCodeAt(0).toString(16).toUpperCase().padStart(4, "0")} at index ${m.index}`;
  return `contains the control character ${at}; send text without control characters (tab, line feed and carriage return are allowed)`;
}

/** How to find the strings of one message type: only the fields that can hold one, directly or nested. */
type Step =
  | { kind: "string"; field: DescField }
  | { kind: "message"; field: DescField; plan: Step[] }
  | { kind: "strings"; field: DescField }
  | { kind: "messages"; field: DescField; plan: Step[] }
  | { kind: "map"; field: DescField; keys: boolean; values: "string" | Step[] | undefined };

const plans = new Map<string, Step[]>();
/** Plans still being computed: a recursive type (google.protobuf.Value) refers to its own. */
const filling = new Set<Step[]>();
const worthIt = (p: Step[]) => p.length > 0 || filling.has(p);

/** Computed once per message type, so a request only visits fields that can hold a string. */
function planOf(desc: DescMessage): Step[] {
  const known = plans.get(desc.typeName);
  if (known) return known;
  const steps: Step[] = [];
  plans.set(desc.typeName, steps);
  filling.add(steps);
  for (const field of desc.fields) {
    if (field.fieldKind === "scalar" && field.scalar === 9) steps.push({ kind: "string", field });
    else if (field.fieldKind === "message") {
      // protobuf-es unboxes a singular google.protobuf.StringValue to a string.
      if (field.message.typeName === "google.protobuf.StringValue") steps.push({ kind: "string", field });
      else {
        const plan = planOf(field.message);
        if (worthIt(plan)) steps.push({ kind: "message", field, plan });
      }
    } else if (field.fieldKind === "list") {
      if (field.listKind === "scalar" && field.scalar === 9) steps.push({ kind: "strings", field });
      else if (field.listKind === "message") {
        const plan = planOf(field.message);
        if (worthIt(plan)) steps.push({ kind: "messages", field, plan });
      }
    } else if (field.fieldKind === "map") {
      const keys = field.mapKey === 9;
      let values: "string" | Step[] | undefined;
      if (field.mapKind === "scalar" && field.scalar === 9) values = "string";
      else if (field.mapKind === "message") values = planOf(field.message);
      if (keys || values === "string" || (Array.isArray(values) && worthIt(values))) steps.push({ kind: "map", field, keys, values });
    }
  }
  filling.delete(steps);
  return steps;
}

type Found = { field: string; description: string };

/** The value of a field as protobuf-es holds it (a oneof member lives under the oneof's name). */
function valueOf(message: Record<string, unknown>, field: DescField): unknown {
  if (field.oneof) {
    const o = message[field.oneof.localName] as { case?: string; value?: unknown } | undefined;
    return o?.case === field.localName ? o.value : undefined;
  }
  return message[field.localName];
}

function walk(plan: Step[], message: Record<string, unknown>, prefix: string, out: Found[]): void {
  for (const step of plan) {
    const v = valueOf(message, step.field);
    if (v === undefined || v === null) continue;
    const path = prefix ? `${prefix}.${step.field.name}` : step.field.name;
    switch (step.kind) {
      case "string": {
        const problem = textProblem(v as string);
        if (problem) out.push({ field: path, description: problem });
        break;
      }
      case "message":
        walk(step.plan, v as Record<string, unknown>, path, out);
        break;
      case "strings":
        (v as string[]).forEach((s, i) => {
          const problem = textProblem(s);
          if (problem) out.push({ field: `${path}[${i}]`, description: problem });
        });
        break;
      case "messages":
        (v as Record<string, unknown>[]).forEach((m, i) => walk(step.plan, m, `${path}[${i}]`, out));
        break;
      case "map":
        for (const [key, value] of Object.entries(v as Record<string, unknown>)) {
          const at = `${path}[${quote(key)}]`;
          const keyProblem = step.keys ? textProblem(key) : undefined;
          if (keyProblem) out.push({ field: at, description: `key ${keyProblem}` });
          if (step.values === "string") {
            const problem = textProblem(value as string);
            if (problem) out.push({ field: at, description: problem });
          } else if (step.values) walk(step.values, value as Record<string, unknown>, at, out);
        }
        break;
    }
  }
}

/** Every string of a message (nested messages, lists, map keys and values) that is not acceptable text. */
export function textViolations(schema: DescMessage, message: Message): Found[] {
  const plan = planOf(schema);
  if (plan.length === 0) return [];
  const out: Found[] = [];
  walk(plan, message as unknown as Record<string, unknown>, "", out);
  return out;
}

/** Validates one message; throws INVALID_ARGUMENT with one field violation per invalid field. */
export function validateMessage(schema: DescMessage, message: Message): void {
  const result = validator.validate(schema, message);
  if (result.kind === "error") {
    throw new ConnectError(`request could not be validated: ${result.error.message}`, Code.Internal);
  }
  const found: Found[] = result.kind === "invalid" ? result.violations.map((v) => ({ field: pathOf(v), description: v.message || v.ruleId })) : [];
  found.push(...textViolations(schema, message));
  if (found.length === 0) return;
  // One violation per field, however many rules it breaks.
  const byField = new Map<string, string[]>();
  for (const f of found) byField.set(f.field, [...(byField.get(f.field) ?? []), f.description]);
  const violations = [...byField].map(([field, descriptions]) => ({ field, description: descriptions.join("; ") }));
  const summary = violations.map((v) => `${v.field}: ${v.description}`).join("; ");
  throw domainError(Code.InvalidArgument, `invalid request: ${summary}`, {
    reason: "INVALID_ARGUMENT",
    violations,
    metadata: Object.fromEntries(violations.map((v) => [v.field, v.description])),
  });
}

/**
 * The request as the handler gets it: a unary request validated now (the refusal thrown),
 * a stream's messages each as it arrives.
 */
export function validated<R extends UnaryRequest | StreamRequest>(req: R): R {
  if (!req.stream) {
    validateMessage(req.method.input, req.message);
    return req;
  }
  const input = req.message;
  const method = req.method;
  return {
    ...req,
    message: (async function* () {
      for await (const m of input) {
        validateMessage(method.input, m);
        yield m;
      }
    })(),
  };
}
