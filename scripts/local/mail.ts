/**
 * The local mail catcher of `npm start`: when the Notification service runs and
 * no SMTP settings are given (SMTP_URL or SMTP_HOST), MailDev is started on
 * 127.0.0.1 (SMTP 1025 and web page 1080, shifted by PORT_OFFSET) and the
 * service is pointed at it; every message it sends can be read on the web page.
 */
import { join } from "node:path";
import { MailDev } from "maildev";

export interface MailCatcher {
  /** Settings for the Notification service's environment. */
  env: Record<string, string>;
  /** The web page that shows the caught mail. */
  webUrl: string;
  /** MailDev's REST API (GET email lists the messages). */
  apiUrl: string;
  stop(): Promise<void>;
}

export async function startMailCatcher(dataDir: string, offset: number, ports = { smtp: 1025 + offset, web: 1080 + offset }): Promise<MailCatcher> {
  const { smtp, web } = ports;
  const maildev = new MailDev({
    smtp,
    web,
    ip: "127.0.0.1",
    webIp: "127.0.0.1",
    mailDirectory: join(dataDir, "maildev"),
    silent: true,
  });
  await maildev.start();
  return {
    env: { SMTP_HOST: "127.0.0.1", SMTP_PORT: String(smtp), SMTP_TLS: "off" },
    webUrl: `http://127.0.0.1:${web}/index.html`,
    apiUrl: `http://127.0.0.1:${web}/api/`,
    stop: () => maildev.stop(),
  };
}
