/**
 * One interceptor applies the contracts' protovalidate rules to every request
 * message: INVALID_ARGUMENT naming the field(s), before any handler runs.
 */
import type { DescMessage, Message } from "@bufbuild/protobuf";
import { createValidator, type Violation } from "@bufbuild/protovalidate";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { domainError } from "./errors.ts";

const validator = createValidator();

function pathOf(v: Violation): string {
  return v.field
    .map((f) => {
      if (f.kind === "list_sub") return `[${f.index}]`;
      if (f.kind === "map_sub") return `[${JSON.stringify(String(f.key))}]`;
      return `.${f.name}`;
    })
    .join("")
    .replace(/^\./, "");
}

/** Validates one message; throws INVALID_ARGUMENT with every violation listed. */
export function validateMessage(schema: DescMessage, message: Message): void {
  const result = validator.validate(schema, message);
  if (result.kind === "valid") return;
  if (result.kind === "error") {
    throw new ConnectError(`request could not be validated: ${result.error.message}`, Code.Internal);
  }
  const violations = result.violations.map((v) => ({ field: pathOf(v), message: v.message || v.ruleId }));
  const first = violations[0]!;
  const summary = violations.map((v) => `${v.field}: ${v.message}`).join("; ");
  throw domainError(Code.InvalidArgument, `invalid request: ${summary}`, {
    reason: "INVALID_ARGUMENT",
    field: first.field,
    metadata: Object.fromEntries(violations.map((v) => [v.field, v.message])),
  });
}

export const validationInterceptor: Interceptor = (next) => async (req) => {
  if (!req.stream) {
    validateMessage(req.method.input, req.message);
    return next(req);
  }
  const input = req.message;
  const method = req.method;
  return next({
    ...req,
    message: (async function* () {
      for await (const m of input) {
        validateMessage(method.input, m);
        yield m;
      }
    })(),
  });
};
