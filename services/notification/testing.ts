/**
 * A real SMTP peer for tests (the smtp-server package, plain SMTP on
 * loopback): every accepted message is parsed with mailparser and kept;
 * recipients matching `rejectPattern` are refused with a permanent 550. It can
 * be stopped and started again on the same port (an SMTP server that is down).
 */
import type { AddressInfo } from "node:net";
import { type ParsedMail, simpleParser } from "mailparser";
import { SMTPServer } from "smtp-server";

export interface ReceivedMail {
  to: string[];
  envelopeFrom: string;
  parsed: ParsedMail;
  raw: string;
}

export class SmtpPeer {
  readonly mails: ReceivedMail[] = [];
  port = 0;
  private server: SMTPServer | undefined;
  rejectPattern = /^reject/;

  async start(port = this.port): Promise<void> {
    const server = new SMTPServer({
      authOptional: true,
      disabledCommands: ["STARTTLS", "AUTH"],
      logger: false,
      onRcptTo: (address, _session, callback) => {
        if (this.rejectPattern.test(address.address)) {
          const error = Object.assign(new Error("5.1.1 user unknown"), { responseCode: 550 });
          return callback(error);
        }
        callback();
      },
      onData: (stream, session, callback) => {
        const chunks: Buffer[] = [];
        stream.on("data", (c: Buffer) => chunks.push(c));
        stream.on("end", async () => {
          const raw = Buffer.concat(chunks).toString("utf8");
          const parsed = await simpleParser(raw);
          this.mails.push({
            to: session.envelope.rcptTo.map((r) => r.address),
            envelopeFrom: session.envelope.mailFrom ? session.envelope.mailFrom.address : "",
            parsed,
            raw,
          });
          callback();
        });
      },
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, "127.0.0.1", () => resolve());
    });
    this.port = (server.server.address() as AddressInfo).port;
    this.server = server;
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  to(address: string): ReceivedMail[] {
    return this.mails.filter((m) => m.to.includes(address));
  }
}

/** The first URL in a text that starts with `prefix`. */
export function linkIn(text: string, prefix: string): URL {
  const match = text.match(new RegExp(`${prefix.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}[^\\s"<>]*`));
  if (!match) throw new Error(`no link starting with ${prefix} in: ${text}`);
  return new URL(match[0]);
}

/** A header of a raw message, unfolded (RFC 5322 2.2.3); undefined when absent. */
export function rawHeader(raw: string, name: string): string | undefined {
  const head = raw.split(/\r?\n\r?\n/)[0]!.replace(/\r?\n[ \t]+/g, " ");
  const line = head.split(/\r?\n/).find((l) => l.toLowerCase().startsWith(`${name.toLowerCase()}:`));
  return line?.slice(name.length + 1).trim();
}
