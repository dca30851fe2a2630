/**
 * One port, two protocols, and the manners of a public server. HTTP/2 clients
 * (gRPC) open with the connection preface; everything else is HTTP/1.1 (Connect,
 * gRPC-Web, /metrics). A plain TCP server accepts the sockets, sniffs the first
 * bytes and hands each socket to an HTTP/1.1 or an HTTP/2 server, so the limits
 * that Node applies only to servers it listens with itself are applied here:
 * header, request and keep-alive timeouts, an idle timeout of HTTP/2 sessions,
 * stream and session-memory limits, a cap on open connections, and a deadline
 * for a socket's first bytes. Used by every service (kit/server.ts) and the edge.
 */
import { createServer as createHttp1Server, type IncomingMessage, type Server as Http1Server, type ServerResponse } from "node:http";
import {
  createServer as createHttp2Server,
  type Http2Server,
  type Http2ServerRequest,
  type Http2ServerResponse,
  type ServerHttp2Session,
} from "node:http2";
import { createServer as createNetServer, type Server as NetServer, type Socket } from "node:net";

export interface ListenerLimits {
  /** Time for a new connection's first bytes and for each HTTP/1.1 request's headers, in ms. */
  headersTimeoutMs: number;
  /** Time to receive a whole HTTP/1.1 request (headers and body), in ms; not the response. */
  requestTimeoutMs: number;
  /** How long an idle HTTP/1.1 keep-alive connection stays open, in ms. */
  keepAliveTimeoutMs: number;
  /** How long an HTTP/2 session without activity stays open while it has no open stream, in ms. */
  http2IdleTimeoutMs: number;
  /** Streams one HTTP/2 client may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS). */
  http2MaxConcurrentStreams: number;
  /** Memory one HTTP/2 session may hold in buffers, in MiB; above it new streams are refused. */
  http2MaxSessionMemoryMb: number;
  /** Open connections accepted at once; further ones are closed on arrival. */
  maxConnections: number;
}

/** The defaults of the services; the edge takes fewer streams per client (gateway/config.ts). */
export const defaultListenerLimits: ListenerLimits = {
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 60_000,
  keepAliveTimeoutMs: 65_000,
  http2IdleTimeoutMs: 300_000,
  // Peers and the edge multiplex all their calls to a service over one session.
  http2MaxConcurrentStreams: 1_000,
  http2MaxSessionMemoryMb: 32,
  maxConnections: 10_000,
};

type Handler = (req: IncomingMessage | Http2ServerRequest, res: ServerResponse | Http2ServerResponse) => void;

export interface Listener {
  /** The TCP server: listen on it (or use `listen`). */
  readonly server: NetServer;
  readonly h1: Http1Server;
  readonly h2: Http2Server;
  /** Listens and resolves with the port (useful with port 0). */
  listen(port: number, host: string): Promise<number>;
  /** Sockets open now, whatever their protocol. */
  readonly sockets: ReadonlySet<Socket>;
  /**
   * Stops accepting, lets open connections finish: HTTP/2 sessions get GOAWAY and
   * complete their streams, HTTP/1.1 connections close once idle. What is still
   * open after `graceMs` is cut.
   */
  close(graceMs: number): Promise<void>;
}

const h2Preface = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

export function createListener(handler: Handler, limits: ListenerLimits): Listener {
  const h1 = createHttp1Server(
    {
      headersTimeout: limits.headersTimeoutMs,
      requestTimeout: limits.requestTimeoutMs,
      keepAliveTimeout: limits.keepAliveTimeoutMs,
      // How often Node checks the two timeouts above: often enough that a small one holds.
      connectionsCheckingInterval: Math.max(50, Math.min(30_000, Math.floor(limits.headersTimeoutMs / 4))),
    },
    handler as (req: IncomingMessage, res: ServerResponse) => void,
  );
  // Node checks header and request timeouts only on a server that emitted 'listening'; this
  // one never listens itself (it is handed sockets), so it is told it does.
  h1.emit("listening");

  const h2 = createHttp2Server(
    { maxSessionMemory: limits.http2MaxSessionMemoryMb, settings: { maxConcurrentStreams: limits.http2MaxConcurrentStreams } },
    handler as (req: Http2ServerRequest, res: Http2ServerResponse) => void,
  );
  const openStreams = new WeakMap<ServerHttp2Session, number>();
  const sessions = new Set<ServerHttp2Session>();
  h2.on("session", (session: ServerHttp2Session) => {
    sessions.add(session);
    openStreams.set(session, 0);
    session.once("close", () => sessions.delete(session));
  });
  h2.on("stream", (stream) => {
    // A stream the client reset at once (cancel under load) may arrive already detached
    // from its session: nothing to count, and a WeakMap refuses an undefined key.
    const session = stream.session as ServerHttp2Session | undefined;
    if (!session) return;
    openStreams.set(session, (openStreams.get(session) ?? 0) + 1);
    stream.once("close", () => openStreams.set(session, (openStreams.get(session) ?? 1) - 1));
  });
  // A quiet session is closed (GOAWAY) unless a stream is open: a long server stream
  // (WatchOrder) may be silent for a while. Activity rearms the timer.
  if (limits.http2IdleTimeoutMs > 0) h2.setTimeout(limits.http2IdleTimeoutMs);
  h2.on("timeout", (session: ServerHttp2Session) => {
    if ((openStreams.get(session) ?? 0) === 0) session.close();
  });

  const sockets = new Set<Socket>();
  const server = createNetServer((socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    // Errors on a client's socket (resets) are the client's business, not a crash.
    socket.on("error", () => undefined);
    sniff(socket);
  });
  if (limits.maxConnections > 0) server.maxConnections = limits.maxConnections;

  /** Reads until the bytes match the HTTP/2 preface or differ from it, within the headers timeout. */
  function sniff(socket: Socket): void {
    let head = Buffer.alloc(0);
    const deadline = setTimeout(() => socket.destroy(), limits.headersTimeoutMs);
    const onReadable = () => {
      for (let chunk: Buffer | null; (chunk = socket.read() as Buffer | null) !== null; ) head = Buffer.concat([head, chunk]);
      const n = Math.min(head.length, h2Preface.length);
      const likeH2 = h2Preface.subarray(0, n).equals(head.subarray(0, n));
      if (likeH2 && head.length < h2Preface.length) return; // could still be either
      done();
      if (head.length > 0) socket.unshift(head);
      (likeH2 ? h2 : h1).emit("connection", socket);
    };
    const done = () => {
      clearTimeout(deadline);
      socket.off("readable", onReadable);
    };
    socket.on("readable", onReadable);
    socket.once("close", done);
  }

  return {
    server,
    h1,
    h2,
    sockets,
    listen: (port, host) =>
      new Promise<number>((resolve, reject) => {
        server.once("error", reject);
        server.listen(port, host, () => {
          server.off("error", reject);
          const address = server.address();
          resolve(typeof address === "object" && address ? address.port : port);
        });
      }),
    async close(graceMs) {
      if (server.listening) server.close();
      for (const session of sessions) session.close();
      const deadline = Date.now() + graceMs;
      for (;;) {
        // An HTTP/1.1 connection becomes idle when its response is done, and is closed then.
        h1.closeIdleConnections();
        if (sockets.size === 0 || Date.now() >= deadline) break;
        await new Promise((r) => setTimeout(r, 20));
      }
      for (const socket of sockets) socket.destroy();
    },
  };
}
