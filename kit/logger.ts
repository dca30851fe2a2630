/**
 * Structured JSON logs (pino). Every line carries the service name and, inside
 * a request or event handler, its request_id and trace_id.
 */
import { pino, type Logger } from "pino";
import { currentTrace } from "./context.ts";

export type { Logger };

export function createLogger(service: string, level = "info"): Logger {
  return pino({
    level,
    base: { service },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
    mixin() {
      const t = currentTrace();
      return t ? { request_id: t.requestId, trace_id: t.traceId, span_id: t.spanId } : {};
    },
    redact: {
      paths: ["password", "*.password", "token", "*.token", "authorization", "*.authorization", "refreshToken", "*.refreshToken"],
      censor: "[redacted]",
    },
  });
}
