/**
 * The client's address, the one way every service derives it (ARCHITECTURE: "Services
 * trust a configured number of proxy hops, no more"). Each trusted proxy appends the
 * address it received the call from to X-Forwarded-For, so only the last `hops` entries
 * were written by our own infrastructure; everything left of them is the caller's to
 * choose. With hops = 1 (the edge, the default) the client is the last entry; with
 * hops = 0 it is the TCP peer and X-Forwarded-For is ignored. A call with fewer entries
 * than hops (from inside the mesh, or through fewer proxies) resolves to the furthest
 * entry we have, and a call without the header to the TCP peer.
 */
import { isIP } from "node:net";
import { type ContextValues, createContextKey, type HandlerContext } from "@connectrpc/connect";

/** What the server knows of a call's connection, set by the kit's node adapter. */
export interface ConnectionInfo {
  /** Address of the TCP peer (the last proxy, or the client itself when called directly). */
  peer: string | undefined;
  /** TRUSTED_PROXY_HOPS of the service. */
  trustedProxyHops: number;
}

export const connectionKey = createContextKey<ConnectionInfo>({ peer: undefined, trustedProxyHops: 0 }, { description: "connection of the call" });

/** A bare IP in canonical form ("::ffff:1.2.3.4" becomes "1.2.3.4"), or undefined for anything else. */
export function normalizeIp(value: string | undefined): string | undefined {
  const v = value?.trim().toLowerCase();
  if (!v || !isIP(v)) return undefined;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(v);
  return mapped ? mapped[1] : v;
}

/**
 * The client address of a call, from its X-Forwarded-For and TCP peer: the entry `hops`
 * places from the right. An entry that is not an IP ("unknown", "1.2.3.4:80", garbage) is
 * no address: the nearest valid one to its right is used instead (the proxy that passed
 * it on), ending at the TCP peer. Empty only when not even the peer is known.
 */
export function clientAddress(forwardedFor: string | null | undefined, peer: string | undefined, hops: number): string {
  // Nearest first: the TCP peer, then X-Forwarded-For from its right end.
  const chain = [peer, ...(forwardedFor ? forwardedFor.split(",").reverse() : [])];
  for (let i = Math.min(hops, chain.length - 1); i >= 0; i--) {
    const ip = normalizeIp(chain[i]);
    if (ip) return ip;
  }
  return "";
}

/** The client address of the call being handled (from a handler or an interceptor). Every user of a client IP takes it from here. */
export function clientAddressOf(call: HandlerContext | { contextValues: ContextValues; header: Headers }): string {
  const [values, header] = "requestHeader" in call ? [call.values, call.requestHeader] : [call.contextValues, call.header];
  const { peer, trustedProxyHops } = values.get(connectionKey);
  return clientAddress(header.get("x-forwarded-for"), peer, trustedProxyHops);
}
