/** Clients that misbehave on purpose, for tests of the servers' connection limits (kit/listener.ts). */
import { connect as tcpConnect, type Socket } from "node:net";

/** Resolves when the socket closes (the server closed it, in the tests that use it). */
export const closedByServer = (socket: Socket) => new Promise<void>((resolve) => socket.once("close", () => resolve()));

/** A slowloris client: a request line, then one header byte every 100 ms, never the end of the headers. */
export function slowloris(port: number): { socket: Socket; closed: Promise<void> } {
  const socket = tcpConnect(port, "127.0.0.1");
  socket.on("error", () => undefined);
  const closed = closedByServer(socket);
  socket.once("connect", () => {
    socket.write("GET /metrics HTTP/1.1\r\nHost: localhost\r\nX-Slow: ");
    const drip = setInterval(() => (socket.writable ? socket.write("a") : clearInterval(drip)), 100);
    socket.once("close", () => clearInterval(drip));
  });
  return { socket, closed };
}
