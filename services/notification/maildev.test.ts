/**
 * What `npm start` runs without SMTP settings (scripts/local/mail.ts): the
 * Notification service pointed at a local MailDev, whose web API lists the
 * mail it caught (its web page shows the same).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { jetstream } from "@nats-io/jetstream";
import { connect as natsConnect, type NatsConnection } from "@nats-io/transport-node";
import { v7 as uuidv7 } from "uuid";
import { afterAll, expect, it } from "vitest";
import { file_ecommerce_auth_v1_events, UserRegisteredSchema } from "../../gen/ecommerce/auth/v1/events_pb.js";
import { streamOf } from "../../kit/events/contracts.ts";
import { freePort } from "../../kit/testing/infra.ts";
import { eventually, startMesh, type TestMesh } from "../../kit/testing/mesh.ts";
import { TestIssuer } from "../../kit/testing/tokens.ts";
import { type MailCatcher, startMailCatcher } from "../../scripts/local/mail.ts";
import { notificationService } from "./service.ts";

const dir = mkdtempSync(join(tmpdir(), "maildev-test-"));
let catcher: MailCatcher | undefined;
let mesh: TestMesh | undefined;
let nc: NatsConnection | undefined;

afterAll(async () => {
  await nc?.close();
  await mesh?.stop();
  await catcher?.stop();
  rmSync(dir, { recursive: true, force: true });
});

it("sends to the local mail catcher npm start runs, where the mail can be read", async () => {
  catcher = await startMailCatcher(dir, 0, { smtp: await freePort(), web: await freePort() });
  mesh = await startMesh([new TestIssuer().trustedBy(notificationService)], { ...catcher.env, NOTIFICATION_DELIVERY_EVERY_MS: "100" });
  nc = await natsConnect({ servers: mesh.nats.url });
  const js = jetstream(nc);
  const s = streamOf(file_ecommerce_auth_v1_events);
  await (await js.jetstreamManager()).streams.add({ name: s.name, subjects: s.subjects }).catch(() => undefined);
  const userId = uuidv7();
  const event = create(UserRegisteredSchema, { eventId: uuidv7(), occurredAt: timestampFromDate(new Date()), userId, email: `${userId}@shop.test`, firstName: "Mia", roles: ["customer"] });
  await js.publish("user.registered", toBinary(UserRegisteredSchema, event), { msgID: event.eventId });
  const caught = await eventually(async () => {
    const list = (await (await fetch(`${catcher!.apiUrl}email`)).json()) as { subject: string; to: { address: string }[] }[];
    return list.find((m) => m.to.some((t) => t.address === `${userId}@shop.test`));
  }, 20_000, "mail in MailDev");
  expect(caught.subject).toBe("Welcome to Shop, Mia!");
  expect((await fetch(catcher.webUrl)).status).toBe(200);
});
