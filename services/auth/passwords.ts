/**
 * Password hashing (argon2id, OWASP parameters by default) and the WEAK_PASSWORD
 * rule of Register / ResetPassword / ChangePassword: no composition rules, but
 * refuse what a guesser tries first — common passwords (also with digits or
 * symbols around them), one repeated character or keyboard/number runs, and
 * passwords containing the email's local part.
 */
import { type Algorithm, hash, parseOptions, verify } from "@node-rs/argon2";
import { invalidArgument } from "../../kit/errors.ts";
import type { AuthConfig } from "./config.ts";

const argon2id = 2 as Algorithm;

export class PasswordHasher {
  private readonly options: { algorithm: Algorithm; memoryCost: number; timeCost: number; parallelism: number };
  private dummy: Promise<string> | undefined;

  constructor(config: AuthConfig["argon2"]) {
    this.options = { algorithm: argon2id, memoryCost: config.memoryKib, timeCost: config.timeCost, parallelism: config.parallelism };
  }

  hash(password: string): Promise<string> {
    return hash(password, this.options);
  }

  async verify(passwordHash: string, password: string): Promise<boolean> {
    try {
      return await verify(passwordHash, password);
    } catch {
      return false; // a malformed stored hash never matches
    }
  }

  /** Spends the time of one verification, so an unknown email answers as slowly as a wrong password. */
  async verifyNothing(password: string): Promise<void> {
    this.dummy ??= this.hash("no account has this password: timing equaliser");
    await this.verify(await this.dummy, password);
  }

  /** Whether a stored hash was made with other parameters than today's (then it is replaced at the next sign-in). */
  needsRehash(passwordHash: string): boolean {
    try {
      const o = parseOptions(passwordHash);
      return (
        o.algorithm !== argon2id || o.memoryCost !== this.options.memoryCost || o.timeCost !== this.options.timeCost || o.parallelism !== this.options.parallelism
      );
    } catch {
      return true;
    }
  }
}

// Base words of the most common leaked passwords; with digits or symbols around them they are still weak.
const commonWords = new Set(
  `password passw0rd pass qwerty qwertyuiop asdfgh asdfghjkl zxcvbnm azerty letmein welcome admin administrator
  iloveyou monkey dragon football baseball soccer hockey basketball sunshine princess shadow master superman batman
  trustno abc abcdef abcdefgh abcdefghijkl login starwars whatever freedom michael charlie jennifer jordan hunter
  ranger buster killer hello hellothere secret changeme default summer winter spring autumn test testing guest
  user root access flower cookie computer internet samsung google apple mustang harley matrix pokemon liverpool
  chelsea arsenal barcelona loveme lovely family forever onlyme nothing blahblah mypassword yourpassword
  thisismypassword correcthorsebatterystaple`.split(/\s+/),
);

const keyboardRuns = ["qwertyuiopasdfghjklzxcvbnm", "1234567890", "0987654321", "abcdefghijklmnopqrstuvwxyz", "zyxwvutsrqponmlkjihgfedcba", "1qaz2wsx3edc4rfv"];

function isRun(s: string): boolean {
  if (s.length < 4) return false;
  return keyboardRuns.some((run) => {
    // The string is made of consecutive stretches of one run (e.g. "123412341234").
    for (let i = 0; i < s.length; ) {
      let best = 0;
      for (let len = s.length - i; len >= 2; len--) {
        if (run.includes(s.slice(i, i + len))) {
          best = len;
          break;
        }
      }
      if (best === 0) return false;
      i += best;
    }
    return true;
  });
}

/** Why a password is weak, or undefined when it is acceptable. */
export function weaknessOf(password: string, email: string): string | undefined {
  const lower = password.toLowerCase();
  const compact = lower.replace(/\s+/g, "");
  if (new Set([...compact]).size <= 2) return "uses only one or two different characters";
  if (isRun(compact)) return "is a keyboard or number sequence";
  const letters = compact.replace(/[^a-z]/g, "");
  const core = compact.replace(/^[^a-z]+|[^a-z]+$/g, "");
  if (commonWords.has(letters) || commonWords.has(core) || commonWords.has(compact)) return "is one of the most common passwords";
  if (letters.length > 0 && [...commonWords].some((w) => w.length >= 6 && letters === w.repeat(letters.length / w.length))) {
    return "repeats a common password";
  }
  const local = email.split("@")[0]?.toLowerCase() ?? "";
  if (local.length >= 3 && compact.includes(local.replace(/\s+/g, ""))) return "contains the email address's name";
  return undefined;
}

/** INVALID_ARGUMENT with reason WEAK_PASSWORD naming the field, when the password is weak. */
export function requireStrongPassword(password: string, email: string, field: string): void {
  const why = weaknessOf(password, email);
  if (why) throw invalidArgument(field, `the password ${why}; choose a longer passphrase of unrelated words`, "WEAK_PASSWORD");
}
