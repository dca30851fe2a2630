/**
 * Prints one SERVICE_CREDENTIALS entry (`name:argon2id-hash`) for a service's
 * secret, read from standard input so it stays out of the shell history:
 *
 *   printf %s "$ORDER_SERVICE_SECRET" | node services/auth/hash-service-secret.ts order
 */
import { text } from "node:stream/consumers";
import { serviceCredentialEntry } from "./service-credentials.ts";

const name = process.argv[2] ?? "";
if (!/^[a-z][a-z0-9-]{1,49}$/.test(name)) {
  console.error("usage: printf %s \"$SECRET\" | node services/auth/hash-service-secret.ts <service-name>");
  process.exit(2);
}
const secret = (await text(process.stdin)).replace(/\r?\n$/, "");
if (secret.length < 32) {
  console.error("the secret must be at least 32 characters");
  process.exit(2);
}
console.log(await serviceCredentialEntry(name, secret));
