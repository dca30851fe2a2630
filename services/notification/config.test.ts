/** The Notification service's settings: SMTP from a URL or from parts, and the keys production must set. */
import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { loadNotificationConfig } from "./config.ts";

describe("notification settings", () => {
  it("reads SMTP from SMTP_URL (credentials decoded, smtps = implicit TLS) or from its parts", () => {
    const fromUrl = loadNotificationConfig({ SMTP_URL: "smtps://mailer%40shop:p%40ss@mail.example:2465", SMTP_FROM: "Shop <shop@example.com>" });
    expect(fromUrl.smtp).toMatchObject({ host: "mail.example", port: 2465, tls: "implicit", user: "mailer@shop", password: "p@ss", from: "Shop <shop@example.com>" });
    const parts = loadNotificationConfig({ SMTP_HOST: "smtp.example", SMTP_PORT: "587", SMTP_TLS: "starttls", SMTP_USER: "u", SMTP_PASSWORD: "p" });
    expect(parts.smtp).toMatchObject({ host: "smtp.example", port: 587, tls: "starttls", user: "u", password: "p" });
    expect(loadNotificationConfig({}).smtp).toMatchObject({ host: "127.0.0.1", port: 1025, tls: "opportunistic", user: "" });
  });

  it("reports every bad value at once", () => {
    let message = "";
    try {
      loadNotificationConfig({ SMTP_URL: "http://x", SMTP_TLS: "maybe", STOREFRONT_URL: "shop", NOTIFICATION_MAX_ATTEMPTS: "0" });
    } catch (error) {
      message = (error as Error).message;
    }
    for (const name of ["SMTP_URL", "SMTP_TLS", "STOREFRONT_URL", "NOTIFICATION_MAX_ATTEMPTS"]) expect(message).toContain(name);
  });

  it("refuses the development keys in production", () => {
    expect(() => loadNotificationConfig({ NODE_ENV: "production" })).toThrow(/NOTIFICATION_UNSUBSCRIBE_KEY[\s\S]*NOTIFICATION_DATA_KEY[\s\S]*EVENT_KEY_NOTIFICATION/);
    const ok = loadNotificationConfig({
      NODE_ENV: "production",
      NOTIFICATION_UNSUBSCRIBE_KEY: randomBytes(32).toString("base64"),
      NOTIFICATION_DATA_KEY: randomBytes(32).toString("base64"),
      EVENT_KEY_NOTIFICATION: randomBytes(32).toString("hex"),
    });
    expect(ok.eventKey).toHaveLength(32);
  });
});
