/**
 * This service's own credential for INTERNAL calls: a short-lived service token
 * from Auth's IssueServiceToken, cached and renewed when 80% of its life has passed.
 */
import { type Client, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { AuthService } from "../../gen/ecommerce/auth/v1/auth_pb.js";
import { unavailable } from "../errors.ts";

export interface ServiceTokenSource {
  token(): Promise<string>;
}

export class ServiceCredentials implements ServiceTokenSource {
  private cached: { token: string; renewAt: number } | undefined;
  private inflight: Promise<string> | undefined;
  private readonly client: Client<typeof AuthService>;
  private readonly service: string;
  private readonly secret: string;
  private readonly authUrl: string;

  constructor(service: string, secret: string, authUrl: string, timeoutMs: number) {
    this.service = service;
    this.secret = secret;
    this.authUrl = authUrl;
    this.client = createClient(AuthService, createGrpcTransport({ baseUrl: authUrl, defaultTimeoutMs: timeoutMs }));
  }

  async token(): Promise<string> {
    if (this.cached && Date.now() < this.cached.renewAt) return this.cached.token;
    this.inflight ??= (async () => {
      try {
        const res = await this.client.issueServiceToken({ serviceName: this.service, serviceSecret: this.secret });
        const issuedAt = Date.now();
        const lifeMs = res.expiresIn ? Number(res.expiresIn.seconds) * 1000 : 60_000;
        this.cached = { token: res.accessToken, renewAt: issuedAt + lifeMs * 0.8 };
        return res.accessToken;
      } catch (error) {
        throw unavailable(`cannot obtain a service credential from auth at ${this.authUrl}: ${(error as Error).message}`, "SERVICE_CREDENTIAL_UNAVAILABLE", 1000);
      } finally {
        this.inflight = undefined;
      }
    })();
    return this.inflight;
  }
}
