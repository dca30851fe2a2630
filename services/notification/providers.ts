/**
 * Delivery providers, one interface for every channel: EMAIL over SMTP
 * (nodemailer), SMS and PUSH through sandbox providers that only record what
 * they would send (no real gateway is reachable from our machines; a real one
 * implements the same interface). A provider classifies its failures:
 * permanent (an SMTP 5xx: never retried) or temporary (retried with backoff).
 */
import nodemailer, { type Transporter } from "nodemailer";
import type { Logger } from "../../kit/logger.ts";
import type { SmtpConfig } from "./config.ts";

export interface OutgoingMessage {
  notificationId: string;
  to: string;
  subject: string;
  text: string;
  html: string;
  headers: Record<string, string>;
}

export type SendResult =
  | { ok: true; messageId: string; response: string }
  | { ok: false; permanent: boolean; error: string; response: string };

export interface ChannelProvider {
  /** Recorded in notification_logs.provider, e.g. "smtp". */
  readonly name: string;
  send(message: OutgoingMessage): Promise<SendResult>;
  close?(): void;
}

interface SmtpError extends Error {
  responseCode?: number;
  response?: string;
  code?: string;
}

export class SmtpProvider implements ChannelProvider {
  readonly name = "smtp";
  private readonly transport: Transporter;
  private readonly from: string;

  constructor(config: SmtpConfig) {
    this.from = config.from;
    this.transport = nodemailer.createTransport({
      host: config.host,
      port: config.port,
      secure: config.tls === "implicit",
      requireTLS: config.tls === "starttls",
      ignoreTLS: config.tls === "off",
      auth: config.user ? { user: config.user, pass: config.password } : undefined,
      connectionTimeout: config.timeoutMs,
      greetingTimeout: config.timeoutMs,
      socketTimeout: config.timeoutMs * 3,
    });
  }

  async send(m: OutgoingMessage): Promise<SendResult> {
    try {
      const info = await this.transport.sendMail({
        from: this.from,
        to: m.to,
        subject: m.subject,
        text: m.text,
        html: m.html || undefined,
        headers: m.headers,
        messageId: `<${m.notificationId}@notification.shop>`,
      });
      return { ok: true, messageId: info.messageId, response: String(info.response ?? "") };
    } catch (error) {
      const e = error as SmtpError;
      const permanent = typeof e.responseCode === "number" && e.responseCode >= 500 && e.responseCode < 600;
      const answer = e.response ?? "";
      return { ok: false, permanent, error: (answer || `${e.code ?? "ERROR"}: ${e.message}`).slice(0, 1000), response: answer };
    }
  }

  close(): void {
    this.transport.close();
  }
}

/** Records what it would send (tests read `sent`), and logs it. */
export class SandboxProvider implements ChannelProvider {
  readonly sent: OutgoingMessage[] = [];
  readonly name: string;
  private readonly log: Logger;
  constructor(name: string, log: Logger) {
    this.name = name;
    this.log = log;
  }

  async send(m: OutgoingMessage): Promise<SendResult> {
    this.sent.push(m);
    if (this.sent.length > 1000) this.sent.shift();
    this.log.info({ provider: this.name, notification_id: m.notificationId }, "sandbox provider recorded a message");
    return { ok: true, messageId: `${this.name}-${m.notificationId}`, response: "recorded by the sandbox" };
  }
}

export interface Providers {
  email: ChannelProvider;
  sms: ChannelProvider;
  push: ChannelProvider;
}

export function makeProviders(smtp: SmtpConfig, log: Logger): Providers {
  return { email: new SmtpProvider(smtp), sms: new SandboxProvider("sandbox-sms", log), push: new SandboxProvider("sandbox-push", log) };
}
