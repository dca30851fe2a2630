/**
 * The one reader of settings from environment variables, for the kit, every
 * service's own settings (in its `setup`) and the edge. Every value is checked;
 * problems are collected and reported all at once, each saying what was expected,
 * so a misconfigured process never starts and one restart fixes everything.
 */

export type Env = Record<string, string | undefined>;

export class ConfigError extends Error {
  readonly problems: string[];
  constructor(problems: string[], what = "configuration") {
    super(`invalid ${what}:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
    this.name = "ConfigError";
    this.problems = problems;
  }
}

export class EnvReader {
  readonly problems: string[] = [];
  readonly env: Env;

  constructor(env: Env) {
    this.env = env;
  }

  /** NODE_ENV=production: development defaults of secrets are refused. */
  get production(): boolean {
    return this.env.NODE_ENV === "production";
  }

  /** Records a problem found by the caller's own check. */
  problem(message: string): void {
    this.problems.push(message);
  }

  /** Unset and empty both mean "use the default". */
  string(name: string, fallback: string): string {
    const v = this.env[name];
    return v === undefined || v === "" ? fallback : v;
  }

  int(name: string, fallback: number, min: number, max: number): number {
    const raw = this.env[name];
    if (raw === undefined || raw === "") return fallback;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < min || n > max) {
      this.problems.push(`${name} must be an integer from ${min} to ${max}, got "${raw}"`);
      return fallback;
    }
    return n;
  }

  bool(name: string, fallback: boolean): boolean {
    const raw = this.string(name, "");
    if (raw === "") return fallback;
    if (/^(1|true|yes|on)$/i.test(raw)) return true;
    if (/^(0|false|no|off)$/i.test(raw)) return false;
    this.problems.push(`${name} must be true or false, got "${raw}"`);
    return fallback;
  }

  url(name: string, fallback: string, protocols: string[]): string {
    const value = this.string(name, fallback);
    try {
      const u = new URL(value);
      if (!protocols.includes(u.protocol)) throw new Error("protocol");
    } catch {
      this.problems.push(`${name} must be a ${protocols.join(" or ")} URL, got "${value}"`);
    }
    return value;
  }

  oneOf<T extends string>(name: string, fallback: T, allowed: readonly T[]): T {
    const value = this.string(name, fallback) as T;
    if (!allowed.includes(value)) this.problems.push(`${name} must be one of ${allowed.join(", ")}, got "${value}"`);
    return value;
  }

  /** A comma-separated list; blanks dropped. */
  list(name: string, fallback: readonly string[]): string[] {
    const raw = this.env[name];
    if (raw === undefined || raw.trim() === "") return [...fallback];
    return raw
      .split(",")
      .map((s) => s.trim())
      .filter((s) => s !== "");
  }

  /** An ISO 4217 currency code. */
  currency(name: string, fallback: string): string {
    const value = this.string(name, fallback);
    if (!/^[A-Z]{3}$/.test(value)) this.problems.push(`${name} must be an ISO 4217 code like ${fallback}, got "${value}"`);
    return value;
  }

  /** Comma-separated ISO 4217 codes, at least one. */
  currencies(name: string, fallback: readonly string[]): string[] {
    const values = this.list(name, fallback);
    for (const c of values) if (!/^[A-Z]{3}$/.test(c)) this.problems.push(`${name} must list ISO 4217 codes like EUR, got "${c}"`);
    if (values.length === 0) this.problems.push(`${name} must name at least one currency`);
    return values;
  }

  /**
   * A secret key: base64 of exactly `bytes` bytes. Unset, the development key is
   * used locally and refused in production, where it would be as good as public.
   */
  key(name: string, development: Buffer, bytes = 32): Buffer {
    const raw = this.string(name, "");
    if (raw === "") {
      if (this.production) this.problems.push(`${name} must be set in production (the development key is public)`);
      return development;
    }
    return this.decodeKey(name, raw, bytes) ?? development;
  }

  /** Comma-separated base64 keys (e.g. the previous keys of a rotation). */
  keys(name: string, bytes = 32): Buffer[] {
    return this.list(name, [])
      .map((raw, i) => this.decodeKey(`${name}[${i}]`, raw, bytes))
      .filter((k): k is Buffer => k !== undefined);
  }

  /** A secret string of at least `minLength` characters; the development value is refused in production. */
  secret(name: string, development: string, minLength = 32): string {
    const value = this.string(name, development);
    if (value.length < minLength) this.problems.push(`${name} must be at least ${minLength} characters`);
    if (this.production && value === development) this.problems.push(`${name} must be set in production (it is the development default)`);
    return value;
  }

  /** Returns `value`, or throws every problem found while reading it. */
  done<T>(value: T, what = "configuration"): T {
    if (this.problems.length > 0) throw new ConfigError(this.problems, what);
    return value;
  }

  private decodeKey(name: string, raw: string, bytes: number): Buffer | undefined {
    const trimmed = raw.trim();
    const key = Buffer.from(trimmed, "base64");
    if (!/^[A-Za-z0-9+/_-]+={0,2}$/.test(trimmed) || key.length !== bytes) {
      this.problems.push(`${name} must be base64 of exactly ${bytes} bytes (e.g. \`openssl rand -base64 ${bytes}\`), got ${key.length} bytes`);
      return undefined;
    }
    return key;
  }
}
