/**
 * Readable local logs: each child's JSON log lines (pino) become one aligned,
 * coloured line with the service name; anything else is passed through.
 */
const colours = [36, 35, 33, 32, 34, 91, 92, 93, 94, 95, 96];
const levelColour: Record<string, number> = { error: 31, fatal: 31, warn: 33, info: 32, debug: 90, trace: 90 };
const skip = new Set(["level", "time", "service", "msg", "pid", "hostname", "span_id"]);

export function formatter(name: string, index: number, width: number) {
  const tag = `\x1b[${colours[index % colours.length]}m${name.padEnd(width)}\x1b[0m`;
  return (line: string): string => {
    let record: Record<string, unknown>;
    try {
      record = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return `${tag} ${line}`;
    }
    const time = typeof record.time === "string" ? record.time.slice(11, 23) : "";
    const level = String(record.level ?? "info");
    const extras = Object.entries(record)
      .filter(([k]) => !skip.has(k))
      .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`)
      .join(" ");
    return `${tag} ${time} \x1b[${levelColour[level] ?? 0}m${level.toUpperCase().padEnd(5)}\x1b[0m ${String(record.msg ?? "")} \x1b[90m${extras}\x1b[0m`;
  };
}
