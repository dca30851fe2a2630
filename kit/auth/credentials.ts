/**
 * This service's own credential for INTERNAL calls: a short-lived service token,
 * cached and renewed when 80% of its life has passed. Services get it from
 * Auth's IssueServiceToken; Auth mints its own (RenewingToken with a local signer).
 */
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { type Client, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { AuthService } from "../../gen/ecommerce/auth/v1/auth_pb.js";
import { unavailable } from "../errors.ts";

export interface ServiceTokenSource {
  token(): Promise<string>;
}

export interface MintedToken {
  token: string;
  expiresAt: Date;
}

/** Caches a minted token and mints a new one once 80% of its life has passed; one mint at a time. */
export class RenewingToken implements ServiceTokenSource {
  private cached: { token: string; renewAt: number } | undefined;
  private inflight: Promise<string> | undefined;
  private readonly mint: () => Promise<MintedToken>;

  constructor(mint: () => Promise<MintedToken>) {
    this.mint = mint;
  }

  async token(): Promise<string> {
    if (this.cached && Date.now() < this.cached.renewAt) return this.cached.token;
    this.inflight ??= (async () => {
      try {
        const now = Date.now();
        const minted = await this.mint();
        this.cached = { token: minted.token, renewAt: now + (minted.expiresAt.getTime() - now) * 0.8 };
        return minted.token;
      } finally {
        this.inflight = undefined;
      }
    })();
    return this.inflight;
  }
}

/**
 * The service credential of every service but Auth: Auth's IssueServiceToken with the service's secret.
 * It has its own plain transport rather than a PeerClients client, because PeerClients attaches this
 * very credential to INTERNAL calls (IssueServiceToken is the one INTERNAL RPC called without one).
 */
export class ServiceCredentials extends RenewingToken {
  constructor(service: string, secret: string, authUrl: string, timeoutMs: number) {
    const client: Client<typeof AuthService> = createClient(AuthService, createGrpcTransport({ baseUrl: authUrl, defaultTimeoutMs: timeoutMs }));
    super(async () => {
      try {
        const res = await client.issueServiceToken({ serviceName: service, serviceSecret: secret });
        return { token: res.accessToken, expiresAt: res.expiresAt ? timestampDate(res.expiresAt) : new Date(Date.now() + 60_000) };
      } catch (error) {
        throw unavailable(`cannot obtain a service credential from auth at ${authUrl}: ${(error as Error).message}`, "SERVICE_CREDENTIAL_UNAVAILABLE", 1000);
      }
    });
  }
}
