/**
 * Auth's settings in production: a start without EVENT_KEY_NOTIFICATION is
 * refused (before, Register failed at run time when it sealed a verification
 * token), and the key Auth is started with is the one its events are sealed with.
 */
import { randomBytes } from "node:crypto";
import { afterAll, describe, expect, it } from "vitest";
import { UserEmailVerificationRequestedSchema } from "../../gen/ecommerce/auth/v1/events_pb.js";
import { openSealedField, sealedFieldBinding } from "../../kit/events/sealed.ts";
import { startMesh, type TestMesh } from "../../kit/testing/mesh.ts";
import { serviceCredentialEntry } from "./service-credentials.ts";
import { authService } from "./service.ts";
import { authClient, EventLog } from "./testing.ts";

let mesh: TestMesh | undefined;
let events: EventLog | undefined;

afterAll(async () => {
  await events?.stop();
  await mesh?.stop();
});

async function productionEnv(): Promise<Record<string, string>> {
  return {
    NODE_ENV: "production",
    SERVICE_SECRET: randomBytes(32).toString("base64"),
    AUTH_KEY_ENCRYPTION_KEY: randomBytes(32).toString("base64"),
    SERVICE_CREDENTIALS: await serviceCredentialEntry("order", randomBytes(32).toString("base64")),
  };
}

describe("auth settings in production", () => {
  it("refuses to start without EVENT_KEY_NOTIFICATION, and seals its events' tokens with the key it was given", async () => {
    const env = await productionEnv();
    await expect(startMesh([authService], env)).rejects.toThrow(/EVENT_KEY_NOTIFICATION must be set in production/);
    await expect(startMesh([authService], { ...env, EVENT_KEY_NOTIFICATION: "too short" })).rejects.toThrow(/EVENT_KEY_NOTIFICATION must be 32 bytes/);

    const key = randomBytes(32).toString("hex");
    mesh = await startMesh([authService], { ...env, EVENT_KEY_NOTIFICATION: key });
    events = new EventLog();
    await events.start(mesh.nats.url);
    const { user } = await authClient(mesh.url("auth")).register({ email: "prod.user@shop.test", password: "velvet otter maple drum 4711" });
    const sent = await events.find(UserEmailVerificationRequestedSchema, (e) => e.userId === user!.id);
    const binding = sealedFieldBinding(sent.$typeName, "sealed_token", sent.userId);
    expect(openSealedField("notification", sent.sealedToken, binding, { EVENT_KEY_NOTIFICATION: key })).toMatch(/^[A-Za-z0-9_-]{43}$/);
  });
});
