/**
 * The Notification service against real servers: Auth and Notification on a
 * private nats-server and throwaway databases, the edge in front of them, and
 * a real SMTP peer (smtp-server) whose messages are parsed with mailparser.
 * Customers and admins of Notification's own RPCs get tokens from a TestIssuer;
 * Auth is the real one (sign-up, verification, reset through the edge).
 */
import { create, type DescMessage, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { jetstream, type JetStreamClient } from "@nats-io/jetstream";
import { connect as natsConnect, type NatsConnection } from "@nats-io/transport-node";
import { v7 as uuidv7 } from "uuid";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startEdge } from "../../gateway/edge.ts";
import { AuthService } from "../../gen/ecommerce/auth/v1/auth_pb.js";
import { UserDeletedSchema, UserReactivatedSchema, UserRegisteredSchema } from "../../gen/ecommerce/auth/v1/events_pb.js";
import {
  NotificationChannel,
  NotificationService,
  NotificationStatus,
  NotificationType,
  SendOutcome,
} from "../../gen/ecommerce/notification/v1/notification_pb.js";
import { subjectOf } from "../../kit/events/contracts.ts";
import { sqlOf } from "../../kit/sql.ts";
import { eventsOnStream } from "../../kit/testing/events.ts";
import { freePort } from "../../kit/testing/infra.ts";
import { eventually, startMesh, type TestMesh } from "../../kit/testing/mesh.ts";
import { TestIssuer } from "../../kit/testing/tokens.ts";
import { authService } from "../auth/service.ts";
import { linkIn, rawHeader, SmtpPeer } from "./testing.ts";
import { notificationService } from "./service.ts";
import { failure } from "../../kit/testing/failure.ts";

const issuer = new TestIssuer();
const storefront = "https://shop.example";
const password = "violet harbor tunes 42";
let mesh: TestMesh;
let edge: Awaited<ReturnType<typeof startEdge>>;
let smtp: SmtpPeer;
let nc: NatsConnection;
let js: JetStreamClient;
let auth: ReturnType<typeof createClient<typeof AuthService>>;
let notifications: ReturnType<typeof createClient<typeof NotificationService>>;
let direct: ReturnType<typeof createClient<typeof NotificationService>>;
let adminToken: string;

const bearer = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });
const unique = (name: string) => `${name}.${Math.random().toString(36).slice(2, 8)}@shop.test`;

async function sql<T extends object>(query: string, params: unknown[] = []): Promise<T[]> {
  return sqlOf(mesh.services.notification!.ctx.orm.em.fork()).all<T>(query, params);
}


/** Mails to `address` once there are at least `n`. */
const mailsTo = (address: string, n = 1, what = `mail to ${address}`) => eventually(async () => (smtp.to(address).length >= n ? smtp.to(address) : undefined), 20_000, what);

/** Publishes an Auth event as Auth's relay would (Nats-Msg-Id = event id). */
async function publishAuth<D extends DescMessage>(schema: D, init: Omit<MessageInitShape<D>, "eventId" | "occurredAt">) {
  const eventId = uuidv7();
  const payload = toBinary(schema, create(schema, { ...init, eventId, occurredAt: timestampFromDate(new Date()) } as unknown as MessageInitShape<D>));
  await js.publish(subjectOf(schema), payload, { msgID: eventId });
  return { eventId, payload };
}

/** Waits until Notification's durable on AUTH_EVENTS has handled everything published so far. */
async function authEventsHandled() {
  await eventually(async () => {
    const info = await (await js.jetstreamManager()).consumers.info("AUTH_EVENTS", "notification_AUTH_EVENTS");
    return info.num_pending === 0 && info.num_ack_pending === 0 ? true : undefined;
  }, 20_000, "AUTH_EVENTS consumed");
}

async function registerThroughEdge(email: string, firstName = "Ada", preferredLanguage = "en-GB") {
  const res = await auth.register({ email, password, firstName, lastName: "Lovelace", preferredLanguage });
  return res.user!.id;
}

beforeAll(async () => {
  smtp = new SmtpPeer();
  await smtp.start(0);
  // The edge's address is in the mail (the one-click unsubscribe link), so its port is chosen first.
  const edgePort = await freePort();
  mesh = await startMesh([authService, issuer.trustedBy(notificationService)], {
    SMTP_HOST: "127.0.0.1",
    SMTP_PORT: String(smtp.port),
    SMTP_TLS: "off",
    SMTP_TIMEOUT_MS: "2000",
    STOREFRONT_URL: storefront,
    NOTIFICATION_PUBLIC_URL: `http://127.0.0.1:${edgePort}`,
    NOTIFICATION_DELIVERY_EVERY_MS: "100",
    NOTIFICATION_RETRY_BASE_MS: "200",
    NOTIFICATION_RETRY_MAX_MS: "1000",
    NOTIFICATION_MAX_ATTEMPTS: "50",
    AUTH_RATE_LIMIT_PER_IP: "100000",
    AUTH_RATE_LIMIT_PER_EMAIL: "100",
    NOTIFICATION_RATE_LIMIT_UNSUBSCRIBE: "8",
    // Calls straight to the service name their client in X-Forwarded-For, as the edge does.
    TRUSTED_PROXY_HOPS: "1",
  });
  edge = await startEdge({ port: edgePort, upstreams: { auth: mesh.url("auth"), notification: mesh.url("notification") }, logLevel: process.env.TEST_LOG_LEVEL ?? "silent" });
  const overEdge = createConnectTransport({ baseUrl: edge.url, httpVersion: "1.1" });
  auth = createClient(AuthService, overEdge);
  notifications = createClient(NotificationService, overEdge);
  direct = createClient(NotificationService, createGrpcTransport({ baseUrl: mesh.url("notification") }));
  nc = await natsConnect({ servers: mesh.nats.url });
  js = jetstream(nc);
  adminToken = await issuer.user(uuidv7(), ["admin"]);
});

afterAll(async () => {
  await nc?.close();
  await edge?.stop();
  await mesh?.stop();
  await smtp?.stop();
});

describe("sign-up and password reset by mail", () => {
  it("register through the edge -> welcome and verification mails arrive -> the link verifies the account -> a redelivery sends nothing twice", async () => {
    const email = unique("ada");
    const userId = await registerThroughEdge(email);
    const mails = await mailsTo(email, 2, "welcome and verification mails");
    const welcome = mails.find((m) => m.parsed.subject?.startsWith("Welcome"))!;
    const verification = mails.find((m) => m.parsed.subject === "Confirm your email address")!;
    expect(welcome.parsed.text).toContain("Welcome, Ada!");
    expect(welcome.parsed.html).toContain("<h1>Welcome, Ada!</h1>");
    // Non-security mail carries RFC 8058 one-click unsubscribe; security mail does not.
    expect(rawHeader(welcome.raw, "List-Unsubscribe-Post")).toBe("List-Unsubscribe=One-Click");
    expect(rawHeader(welcome.raw, "List-Unsubscribe")).toMatch(/^<http:\/\/127\.0\.0\.1:\d+\/unsubscribe\/[A-Za-z0-9_.-]+>$/);
    expect(rawHeader(verification.raw, "List-Unsubscribe")).toBeUndefined();
    // handlebars escapes "=" in the href as &#x3D;, which HTML decodes back.
    expect(verification.parsed.html).toContain(`href="${storefront}/verify-email?token&#x3D;`);

    const link = linkIn(verification.parsed.text!, `${storefront}/verify-email?token=`);
    expect(link.origin).toBe(storefront);
    const verified = await auth.verifyEmail({ token: link.searchParams.get("token")! });
    expect(verified.userId).toBe(userId);
    const all = await mailsTo(email, 3, "email verified mail");
    expect(all.map((m) => m.parsed.subject)).toContain("Your email address is confirmed");

    // The stored copy of the verification mail never holds the link.
    const [stored] = await sql<{ body: string; body_html: string; sealed_content: Buffer | null; status: string }>(
      "select body, body_html, sealed_content, status from notifications where user_id = $1 and template_name = 'email_verification'",
      [userId],
    );
    expect(stored!.body).toContain("[redacted]");
    expect(stored!.body).not.toContain("token=");
    expect(stored!.body_html).not.toContain("token=");
    expect(stored!.sealed_content).toBeNull();
    expect(stored!.status).toBe("sent");

    // The same user.registered again, under another Nats-Msg-Id (so JetStream does not drop it): no second welcome.
    const registered = (await eventsOnStream(nc, "AUTH_EVENTS", UserRegisteredSchema)).find((e) => e.userId === userId)!;
    await js.publish("user.registered", toBinary(UserRegisteredSchema, registered), { msgID: uuidv7() });
    await authEventsHandled();
    const [{ n }] = (await sql<{ n: number }>("select count(*)::int as n from notifications where user_id = $1 and template_name = 'welcome'", [userId])) as [{ n: number }];
    expect(n).toBe(2); // one email, one in-app
    await eventually(async () => ((await sql<{ status: string }>("select status from notifications where user_id = $1 and status = 'pending'", [userId])).length === 0 ? true : undefined));
    expect(smtp.to(email).filter((m) => m.parsed.subject?.startsWith("Welcome"))).toHaveLength(1);
  });

  it("password reset by mail, end to end: the mailed link's token sets the new password", async () => {
    const email = unique("reset");
    await registerThroughEdge(email);
    await mailsTo(email, 2);
    await auth.requestPasswordReset({ email });
    const [mail] = (await eventually(async () => {
      const m = smtp.to(email).filter((x) => x.parsed.subject === "Reset your password");
      return m.length ? m : undefined;
    })) as [(typeof smtp.mails)[number]];
    const link = linkIn(mail.parsed.text!, `${storefront}/reset-password?token=`);
    const newPassword = "granite meadow sparrow 9";
    await auth.resetPassword({ token: link.searchParams.get("token")!, newPassword });
    const signedIn = await auth.login({ email, password: newPassword });
    expect(signedIn.user?.email).toBe(email);
    // Auth announces the change; the security notice follows.
    await eventually(async () => (smtp.to(email).some((m) => m.parsed.subject === "Your password was changed") ? true : undefined));
  });

  it("renders an HTML-injection attempt in a first name escaped in the HTML part", async () => {
    const email = unique("mallory");
    await registerThroughEdge(email, `<img src=x onerror=alert(1)>`);
    const [welcome] = (await eventually(async () => {
      const m = smtp.to(email).filter((x) => x.parsed.subject?.startsWith("Welcome"));
      return m.length ? m : undefined;
    })) as [(typeof smtp.mails)[number]];
    expect(welcome.parsed.html).not.toContain("<img src=x");
    expect(welcome.parsed.html).toContain("&lt;img src&#x3D;x onerror&#x3D;alert(1)&gt;");
    expect(welcome.parsed.text).toContain("<img src=x onerror=alert(1)>"); // plain text is not HTML
  });

  it("uses the recipient's language when a template exists for it, else the default", async () => {
    const de = unique("hans");
    const fr = unique("jeanne");
    await registerThroughEdge(de, "Hans", "de-DE");
    await registerThroughEdge(fr, "Jeanne", "fr-FR");
    await eventually(async () => (smtp.to(de).some((m) => m.parsed.subject === "Willkommen bei Shop, Hans!") ? true : undefined));
    await eventually(async () => (smtp.to(de).some((m) => m.parsed.subject === "Bestätigen Sie Ihre E-Mail-Adresse") ? true : undefined));
    await eventually(async () => (smtp.to(fr).some((m) => m.parsed.subject === "Welcome to Shop, Jeanne!") ? true : undefined));
  });
});

describe("delivery", () => {
  it("an SMTP peer that is down, then up, gets the mail once", async () => {
    const port = smtp.port;
    await smtp.stop();
    const userId = uuidv7();
    const email = unique("outage");
    await publishAuth(UserRegisteredSchema, { userId, email, firstName: "Olga", lastName: "O", roles: ["customer"] });
    // At least two failed attempts are logged while the peer is down.
    await eventually(async () => {
      const rows = await sql<{ n: number }>(
        "select count(*)::int as n from notification_logs l join notifications n on n.id = l.notification_id where n.user_id = $1 and n.channel = 'email' and l.status = 'pending'",
        [userId],
      );
      return rows[0]!.n >= 2 ? true : undefined;
    }, 20_000, "failed attempts logged");
    await smtp.start(port);
    await mailsTo(email, 1);
    const [row] = await eventually(async () => {
      const r = await sql<{ id: string; status: string; attempts: number }>("select id, status, attempts from notifications where user_id = $1 and channel = 'email'", [userId]);
      return r[0]?.status === "sent" ? r : undefined;
    });
    expect(row!.attempts).toBeGreaterThanOrEqual(3);
    expect(smtp.to(email)).toHaveLength(1);
    const logs = await direct.listNotificationLogs({ notificationId: row!.id }, bearer(adminToken));
    expect(logs.logs[0]).toMatchObject({ status: NotificationStatus.SENT, provider: "smtp" });
    expect(logs.logs[0]!.providerMessageId).toContain(row!.id);
    expect(logs.logs.slice(1).every((l) => l.status === NotificationStatus.PENDING && l.error !== "")).toBe(true);
  });

  it("a permanent 5xx answer is logged with the SMTP answer and not retried", async () => {
    const userId = uuidv7();
    const email = unique("reject-me");
    await publishAuth(UserRegisteredSchema, { userId, email, firstName: "Rita", lastName: "R", roles: ["customer"] });
    const [row] = await eventually(async () => {
      const r = await sql<{ id: string; status: string; attempts: number; last_error: string }>(
        "select id, status, attempts, last_error from notifications where user_id = $1 and channel = 'email'",
        [userId],
      );
      return r[0]?.status === "failed" ? r : undefined;
    });
    expect(row!.attempts).toBe(1);
    expect(row!.last_error).toMatch(/^550 /);
    const logs = await direct.listNotificationLogs({ notificationId: row!.id }, bearer(adminToken));
    expect(logs.logs).toHaveLength(1);
    expect(logs.logs[0]).toMatchObject({ status: NotificationStatus.FAILED, provider: "smtp" });
    expect(logs.logs[0]!.error).toContain("550");
    const [raw] = await sql<{ response: string }>("select response from notification_logs where notification_id = $1", [row!.id]);
    expect(raw!.response).toContain("5.1.1");
    const failed = await direct.listNotifications({ userId, statuses: [NotificationStatus.FAILED] }, bearer(adminToken));
    expect(failed.notifications.map((n) => n.id)).toEqual([row!.id]);
  });
});

describe("templates", () => {
  const admin = () => bearer(adminToken);

  it("seeds a default for every flow; admins create, read, list, update, preview and delete templates", async () => {
    const list = await direct.listEmailTemplates({ pageSize: 100 }, admin());
    const names = list.templates.map((t) => t.name);
    for (const n of ["welcome", "email_verification", "password_reset", "email_verified", "password_changed", "order_confirmation", "payment_receipt", "refund_issued", "order_shipped"])
      expect(names).toContain(n);
    expect(names).toContain("welcome_de");

    const created = await direct.createEmailTemplate(
      {
        name: "spring_sale",
        subject: "Spring sale, {{first_name}}",
        bodyHtml: "<p>Hi {{first_name}}, {{#items}}<b>{{name}}</b>{{/items}}</p>",
        bodyText: "Hi {{first_name}}",
        variables: [{ name: "first_name", required: true }, { name: "items" }],
        isActive: true,
      },
      admin(),
    );
    expect(created.template).toMatchObject({ name: "spring_sale", isActive: true });
    expect((await failure(direct.createEmailTemplate({ name: "spring_sale", subject: "x", bodyText: "x", isActive: true }, admin()))).reason).toBe("TEMPLATE_NAME_TAKEN");
    const got = await direct.getEmailTemplate({ key: { case: "name", value: "spring_sale" } }, admin());
    expect(got.template?.id).toBe(created.template?.id);

    const preview = await direct.previewEmailTemplate(
      { source: { case: "templateName", value: "spring_sale" }, variables: { first_name: "<b>Eve</b>", items: [{ name: "mug" }] } },
      admin(),
    );
    expect(preview.subject).toBe("Spring sale, <b>Eve</b>");
    expect(preview.bodyHtml).toBe("<p>Hi &lt;b&gt;Eve&lt;/b&gt;, <b>mug</b></p>");
    const withExamples = await direct.previewEmailTemplate({ source: { case: "templateName", value: "password_reset" } }, admin());
    expect(withExamples.exampleVariables).toContain("reset_url");
    expect(withExamples.bodyText).toContain("reset-password?token=sample");
    const missing = await direct.previewEmailTemplate({ source: { case: "templateName", value: "spring_sale" } }, admin());
    expect(missing.missingVariables).toEqual(["first_name"]);

    const updated = await direct.updateEmailTemplate(
      { template: { id: created.template!.id, subject: "Sale! {{first_name}}" }, updateMask: { paths: ["subject"] } },
      admin(),
    );
    expect(updated.template).toMatchObject({ subject: "Sale! {{first_name}}", bodyText: "Hi {{first_name}}" });

    const builtin = list.templates.find((t) => t.name === "welcome")!;
    expect((await failure(direct.deleteEmailTemplate({ id: builtin.id }, admin()))).reason).toBe("TEMPLATE_REQUIRED_BY_FLOW");
    await direct.deleteEmailTemplate({ id: created.template!.id }, admin());
    expect((await failure(direct.getEmailTemplate({ key: { case: "id", value: created.template!.id } }, admin()))).code).toBe(Code.NotFound);
  });

  it("refuses at save a template that does not parse, does not render or uses an undeclared variable", async () => {
    const base = { subject: "Hello", bodyText: "text", isActive: true, variables: [{ name: "first_name" }] };
    const broken = await failure(direct.createEmailTemplate({ ...base, name: "broken_one", bodyHtml: "<p>\n{{#if first_name}}unclosed" }, admin()));
    expect(broken).toMatchObject({ code: Code.InvalidArgument, reason: "TEMPLATE_SYNTAX_ERROR" });
    expect(broken.metadata).toMatchObject({ part: "body_html" });
    const noHelper = await failure(direct.createEmailTemplate({ ...base, name: "broken_two", bodyText: "{{shout first_name}}" }, admin()));
    expect(noHelper.reason).toBe("TEMPLATE_SYNTAX_ERROR");
    const undeclared = await failure(direct.createEmailTemplate({ ...base, name: "broken_three", bodyText: "Hi {{last_name}}" }, admin()));
    expect(undeclared).toMatchObject({ reason: "UNDECLARED_TEMPLATE_VARIABLE", metadata: { name: "last_name", part: "body_text" } });
    const welcome = (await direct.getEmailTemplate({ key: { case: "name", value: "welcome" } }, admin())).template!;
    const badUpdate = await failure(direct.updateEmailTemplate({ template: { id: welcome.id, bodyText: "{{#each}}" }, updateMask: { paths: ["body_text"] } }, admin()));
    expect(badUpdate.reason).toBe("TEMPLATE_SYNTAX_ERROR");
  });

  it("a deactivated locale variant falls back to the flow's own template", async () => {
    const variant = (await direct.getEmailTemplate({ key: { case: "name", value: "welcome_de" } }, admin())).template!;
    await direct.updateEmailTemplate({ template: { id: variant.id, isActive: false }, updateMask: { paths: ["is_active"] } }, admin());
    try {
      const userId = uuidv7();
      const email = unique("karl");
      await publishAuth(UserRegisteredSchema, { userId, email, firstName: "Karl", lastName: "K", preferredLanguage: "de", roles: ["customer"] });
      const [mail] = await mailsTo(email, 1);
      expect(mail!.parsed.subject).toBe("Welcome to Shop, Karl!");
    } finally {
      await direct.updateEmailTemplate({ template: { id: variant.id, isActive: true }, updateMask: { paths: ["is_active"] } }, admin());
    }
  });

  it("admin RPCs need an admin", async () => {
    const customer = await issuer.user(uuidv7());
    expect((await failure(notifications.listEmailTemplates({}, bearer(customer)))).code).toBe(Code.PermissionDenied);
  });
});

describe("preferences, unsubscribe and the in-app inbox", () => {
  it("a marketing opt-out is respected while security mail still goes; SendNotification is idempotent", async () => {
    const userId = uuidv7();
    const email = unique("prefs");
    await publishAuth(UserRegisteredSchema, { userId, email, firstName: "Pia", lastName: "P", roles: ["customer"] });
    await mailsTo(email, 1);
    const token = await issuer.user(userId, ["customer"], email);
    const prefs = await notifications.getNotificationPreferences({}, bearer(token));
    expect(prefs.preferences.find((p) => p.type === NotificationType.MARKETING)).toMatchObject({ emailEnabled: false, inAppEnabled: false });
    expect(prefs.preferences.find((p) => p.type === NotificationType.SECURITY)).toMatchObject({ emailEnabled: true, emailLocked: true });
    expect((await failure(notifications.updateNotificationPreferences({ preferences: [{ type: NotificationType.SECURITY, emailEnabled: false }] }, bearer(token)))).code).toBe(
      Code.InvalidArgument,
    );

    const order = createClient(NotificationService, createGrpcTransport({ baseUrl: mesh.url("notification") }));
    const svc = bearer(await issuer.service("order"));
    const send = (key: string, type: NotificationType, templateName = "order_delivered") =>
      order.sendNotification(
        { recipient: { case: "userId", value: userId }, templateName, variables: { order_number: "ORD-1", order_url: `${storefront}/orders/1` }, channel: NotificationChannel.EMAIL, type, idempotencyKey: key },
        svc,
      );
    // Marketing is off by default: suppressed.
    expect((await send("mkt-00000001", NotificationType.MARKETING)).outcome).toBe(SendOutcome.SUPPRESSED);
    // Opt in, then out again.
    await notifications.updateNotificationPreferences({ preferences: [{ type: NotificationType.MARKETING, emailEnabled: true, inAppEnabled: true }] }, bearer(token));
    const queued = await send("mkt-00000002", NotificationType.MARKETING);
    expect(queued.outcome).toBe(SendOutcome.QUEUED);
    expect((await send("mkt-00000002", NotificationType.MARKETING)).outcome).toBe(SendOutcome.DUPLICATE);
    await eventually(async () => (smtp.to(email).some((m) => m.parsed.subject === "Your order ORD-1 was delivered") ? true : undefined));
    await notifications.updateNotificationPreferences({ preferences: [{ type: NotificationType.MARKETING, emailEnabled: false }] }, bearer(token));
    expect((await send("mkt-00000003", NotificationType.MARKETING)).outcome).toBe(SendOutcome.SUPPRESSED);
    // Security mail still goes.
    const before = smtp.to(email).length;
    await auth.requestPasswordReset({ email }).catch(() => undefined); // not an Auth account: Auth sends nothing
    expect((await send("sec-00000001", NotificationType.SECURITY, "password_changed")).outcome).toBe(SendOutcome.QUEUED);
    await mailsTo(email, before + 1);
    expect((await failure(send("sec-00000001", NotificationType.SECURITY, "welcome"))).reason).toBe("IDEMPOTENCY_KEY_REUSED");
    expect((await failure(send("bad-00000001", NotificationType.ORDER_UPDATES, "no_such_template"))).reason).toBe("TEMPLATE_NOT_FOUND");
    // Not in the template's allowed callers: a customer token is refused.
    expect((await failure(order.sendNotification({ recipient: { case: "userId", value: userId }, templateName: "welcome", channel: NotificationChannel.EMAIL, type: NotificationType.ACCOUNT, idempotencyKey: "x-00000001" }, bearer(token)))).code).toBe(Code.PermissionDenied);
  });

  it("the List-Unsubscribe one-click POST and the Unsubscribe RPC work without signing in", async () => {
    const userId = uuidv7();
    const email = unique("unsub");
    await publishAuth(UserRegisteredSchema, { userId, email, firstName: "Uma", lastName: "U", roles: ["customer"] });
    const [welcome] = await mailsTo(email, 1);
    const header = rawHeader(welcome!.raw, "List-Unsubscribe")!.slice(1, -1);
    // The edge makes the mail client's POST an Unsubscribe call (edgePolicy.webhooks).
    expect(header).toContain(`${edge.url}/unsubscribe/`);
    const res = await fetch(header, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body: "List-Unsubscribe=One-Click" });
    expect(res.status).toBe(200);
    const token = await issuer.user(userId, ["customer"], email);
    const prefs = await notifications.getNotificationPreferences({}, bearer(token));
    expect(prefs.preferences.find((p) => p.type === NotificationType.ACCOUNT)).toMatchObject({ emailEnabled: false, inAppEnabled: true });

    // The RPC through the edge, without a token; twice is harmless.
    const unsubscribeToken = decodeURIComponent(header.split("/unsubscribe/")[1]!);
    const first = await notifications.unsubscribe({ token: unsubscribeToken });
    expect(first).toMatchObject({ type: NotificationType.ACCOUNT, channel: NotificationChannel.EMAIL });
    await notifications.unsubscribe({ token: unsubscribeToken });
    const forged = `${unsubscribeToken.slice(0, -4)}AAAA`;
    expect((await failure(notifications.unsubscribe({ token: forged }))).reason).toBe("INVALID_UNSUBSCRIBE_TOKEN");
    expect((await fetch(header.replace(/.{4}$/, "AAAA"), { method: "POST", body: "List-Unsubscribe=One-Click" })).status).toBe(400);
  });

  it("limits Unsubscribe per client address, and leaves other clients alone", async () => {
    const from = (ip: string) => ({ headers: { "x-forwarded-for": ip } });
    const guess = "A".repeat(40);
    for (let i = 0; i < 8; i++) expect((await failure(direct.unsubscribe({ token: guess }, from("203.0.113.7")))).reason).toBe("INVALID_UNSUBSCRIBE_TOKEN");
    expect(await failure(direct.unsubscribe({ token: guess }, from("203.0.113.7")))).toMatchObject({ code: Code.ResourceExhausted, reason: "RATE_LIMITED" });
    expect((await failure(direct.unsubscribe({ token: guess }, from("203.0.113.8")))).reason).toBe("INVALID_UNSUBSCRIBE_TOKEN");
  });

  it("lists the caller's in-app notifications, counts unread ones and marks them read", async () => {
    const userId = uuidv7();
    const email = unique("inbox");
    await publishAuth(UserRegisteredSchema, { userId, email, firstName: "Ida", lastName: "I", roles: ["customer"] });
    const token = await issuer.user(userId, ["customer"], email);
    const inbox = await eventually(async () => {
      const r = await notifications.listMyNotifications({ channel: NotificationChannel.IN_APP }, bearer(token));
      return r.notifications.length ? r : undefined;
    });
    expect(inbox.notifications[0]).toMatchObject({ userId, templateName: "welcome", status: NotificationStatus.DELIVERED, subject: "Welcome to Shop, Ida!" });
    expect((await notifications.getUnreadCount({ channel: NotificationChannel.IN_APP }, bearer(token))).unreadCount).toBe(1);
    const other = await issuer.user(uuidv7());
    expect((await failure(notifications.markRead({ ids: [inbox.notifications[0]!.id] }, bearer(other)))).code).toBe(Code.NotFound);
    const marked = await notifications.markRead({ ids: [inbox.notifications[0]!.id] }, bearer(token));
    expect(marked.markedCount).toBe(1);
    expect((await notifications.getUnreadCount({ channel: NotificationChannel.IN_APP }, bearer(token))).unreadCount).toBe(0);
    expect((await notifications.markRead({ all: true }, bearer(token))).markedCount).toBeGreaterThanOrEqual(0);
    expect((await notifications.listMyNotifications({ unreadOnly: true }, bearer(token))).notifications).toHaveLength(0);
  });

  it("an admin resends an email (a new notification, same content), once per idempotency key; a reset mail is not resendable", async () => {
    const userId = uuidv7();
    const email = unique("resend");
    await publishAuth(UserRegisteredSchema, { userId, email, firstName: "Rex", lastName: "R", roles: ["customer"] });
    await mailsTo(email, 1);
    const [original] = (await direct.listNotifications({ userId, channel: NotificationChannel.EMAIL }, bearer(adminToken))).notifications;
    const resent = await direct.resendNotification({ id: original!.id, idempotencyKey: "resend-0001" }, bearer(adminToken));
    expect(resent.notification).toMatchObject({ status: NotificationStatus.PENDING, subject: original!.subject, metadata: { resent_from: original!.id } });
    const again = await direct.resendNotification({ id: original!.id, idempotencyKey: "resend-0001" }, bearer(adminToken));
    expect(again.notification?.id).toBe(resent.notification?.id);
    const mails = await mailsTo(email, 2);
    expect(mails[1]!.parsed.subject).toBe(mails[0]!.parsed.subject);
    const [reset] = await sql<{ id: string }>("select id from notifications where template_name = 'email_verification' limit 1");
    expect((await failure(direct.resendNotification({ id: reset!.id, idempotencyKey: "resend-0002" }, bearer(adminToken)))).reason).toBe("NOT_RESENDABLE");
  });

  it("user.deleted stops every notification to the user (and its unsubscribe links); user.reactivated allows them again", async () => {
    const userId = uuidv7();
    const email = unique("deleted");
    await publishAuth(UserRegisteredSchema, { userId, email, firstName: "Dora", lastName: "D", roles: ["customer"] });
    const [welcome] = await mailsTo(email, 1);
    const link = rawHeader(welcome!.raw, "List-Unsubscribe")!.slice(1, -1);
    await publishAuth(UserDeletedSchema, { userId, email, reason: "test", deactivatedBy: uuidv7() });
    await authEventsHandled();
    const svc = bearer(await issuer.service("order"));
    const send = (key: string) =>
      direct.sendNotification(
        { recipient: { case: "userId", value: userId }, templateName: "order_delivered", variables: { order_number: "ORD-D" }, channel: NotificationChannel.EMAIL, type: NotificationType.ORDER_UPDATES, idempotencyKey: key },
        svc,
      );
    expect((await send("deleted-0001")).outcome).toBe(SendOutcome.SUPPRESSED);
    expect((await failure(notifications.unsubscribe({ token: decodeURIComponent(link.split("/unsubscribe/")[1]!) }))).reason).toBe("INVALID_UNSUBSCRIBE_TOKEN");
    await publishAuth(UserReactivatedSchema, { userId, email, reactivatedBy: uuidv7() });
    await authEventsHandled();
    expect((await send("deleted-0002")).outcome).toBe(SendOutcome.QUEUED);
    await eventually(async () => (smtp.to(email).some((m) => m.parsed.subject === "Your order ORD-D was delivered") ? true : undefined));
    // More than 64 KiB of variables is refused.
    const big = await failure(
      direct.sendNotification(
        { recipient: { case: "userId", value: userId }, templateName: "order_delivered", variables: { order_number: "x".repeat(70_000) }, channel: NotificationChannel.EMAIL, type: NotificationType.ORDER_UPDATES, idempotencyKey: "deleted-0003" },
        svc,
      ),
    );
    expect(big).toMatchObject({ code: Code.InvalidArgument, reason: "VARIABLES_TOO_LARGE" });
  });

  it("a notification scheduled for later is neither sent nor listed before its time", async () => {
    const userId = uuidv7();
    const email = unique("later");
    await publishAuth(UserRegisteredSchema, { userId, email, firstName: "Lea", lastName: "L", roles: ["customer"] });
    await mailsTo(email, 1);
    const later = await direct.sendNotification(
      {
        recipient: { case: "userId", value: userId },
        templateName: "order_delivered",
        variables: { order_number: "ORD-LATER" },
        channel: NotificationChannel.EMAIL,
        type: NotificationType.ORDER_UPDATES,
        scheduledAt: timestampFromDate(new Date(Date.now() + 3_600_000)),
        idempotencyKey: "later-00000001",
      },
      bearer(await issuer.service("cart")),
    );
    expect(later).toMatchObject({ outcome: SendOutcome.QUEUED, notification: { status: NotificationStatus.PENDING } });
    const job = mesh.services.notification!.jobs.get("notification-delivery") as unknown as { runNow(): Promise<void> };
    await job.runNow();
    expect(smtp.to(email).some((m) => m.parsed.subject?.includes("ORD-LATER"))).toBe(false);
    const mine = await notifications.listMyNotifications({ channel: NotificationChannel.EMAIL }, bearer(await issuer.user(userId)));
    expect(mine.notifications.map((n) => n.templateName)).toEqual(["welcome"]);
  });
});
