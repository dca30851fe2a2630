/**
 * The browser side of test/e2e/browser.test.ts, bundled for Chromium by the
 * test (rolldown): the generated Order client over connect-web's two
 * transports, Connect (fetch streaming) and gRPC-Web, against the edge named in
 * the page's query string (`?edge=<url>`). Each watch records every message and
 * how the stream ended in `globalThis.watches`, which the test polls; only plain
 * data is kept there, since the test reads it across the page boundary.
 *
 * Typechecked with the rest of the project: it touches no DOM globals (the
 * project has no DOM lib), only fetch, URL and AbortController, which Node has too.
 */
import { ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import { OrderService } from "../../../gen/ecommerce/order/v1/order_pb.js";
import { ErrorInfoSchema } from "../../../gen/google/rpc/error_details_pb.js";

export type Protocol = "connect" | "grpc-web";

export interface WatchMessage {
  status: number;
  /** The status change the message reports; undefined on the first message and for payment/tracking-only changes. */
  change?: number;
  payment: number;
  /** How far the order has come: its status history entries and last change, which a resumed stream must not go back on. */
  history: number;
  updatedAtMs: number;
  /** WatchOrderResponse.version, as a decimal string (a bigint does not cross page.evaluate). */
  version: string;
}

export interface WatchState {
  protocol: Protocol;
  messages: WatchMessage[];
  /** The stream ended without an error (the server closed it: a terminal status). */
  completed: boolean;
  /** How the stream failed, as connect-web reports it. */
  error?: { code: number; message: string; reason?: string };
}

export interface PageApi {
  watches: Record<string, WatchState>;
  /** Opens WatchOrder as `name`; the bearer token is left out when `token` is undefined; resumed after `resumeAfterVersion` if given. */
  watch(name: string, protocol: Protocol, orderId: string, token?: string, resumeAfterVersion?: string): void;
  /** Ends the watch `name` from the browser's side (as a closed tab or a reconnect does). */
  stop(name: string): void;
}

const edge = new URL(String((globalThis as { location?: unknown }).location)).searchParams.get("edge") ?? "";
const transports: Record<Protocol, Transport> = {
  connect: createConnectTransport({ baseUrl: edge }),
  "grpc-web": createGrpcWebTransport({ baseUrl: edge }),
};
const aborts = new Map<string, AbortController>();

const api: PageApi = {
  watches: {},
  watch(name, protocol, orderId, token, resumeAfterVersion) {
    const state: WatchState = { protocol, messages: [], completed: false };
    const abort = new AbortController();
    api.watches[name] = state;
    aborts.set(name, abort);
    const orders = createClient(OrderService, transports[protocol]);
    void (async () => {
      try {
        const headers = token === undefined ? {} : { authorization: `Bearer ${token}` };
        for await (const m of orders.watchOrder({ orderId, resumeAfterVersion: BigInt(resumeAfterVersion ?? "0") }, { headers, signal: abort.signal })) {
          const o = m.order!;
          const updated = o.updatedAt!;
          state.messages.push({
            status: o.status,
            change: m.change?.status,
            payment: o.paymentStatus,
            history: o.statusHistory.length,
            updatedAtMs: Number(updated.seconds) * 1000 + Math.floor(updated.nanos / 1e6),
            version: m.version.toString(),
          });
        }
        state.completed = true;
      } catch (e) {
        const error = ConnectError.from(e);
        state.error = { code: error.code, message: error.rawMessage, reason: error.findDetails(ErrorInfoSchema)[0]?.reason };
      }
    })();
  },
  stop(name) {
    aborts.get(name)?.abort();
  },
};

Object.assign(globalThis, { pageApi: api });
