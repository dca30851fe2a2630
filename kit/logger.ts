/**
 * Structured JSON logs (pino). Every line carries the service name and, inside
 * a request or event handler, its request_id and trace_id.
 */
import { type DestinationStream, type LoggerOptions, pino, type Logger } from "pino";
import { currentTrace } from "./context.ts";

export type { Logger };

/** `destination`: where lines go (default stdout); tests read them from a stream. */
export function createLogger(service: string, level = "info", destination?: DestinationStream): Logger {
  const options: LoggerOptions = {
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
  };
  return destination ? pino(options, destination) : pino(options);
}
