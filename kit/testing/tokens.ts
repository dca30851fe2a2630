/**
 * A test token issuer with the claims Auth issues (ES256, kid, iss, aud), for
 * testing services without the Auth service. Real Auth tests use real logins.
 */
import { exportJWK, generateKeyPair, type JWK, SignJWT } from "jose";
import { serviceRole, tokenAudience, tokenIssuer } from "../auth/principal.ts";
import type { AnyServiceDefinition } from "../server.ts";

export class TestIssuer {
  private readonly kid = `test-${Math.random().toString(36).slice(2, 8)}`;
  private keys: Awaited<ReturnType<typeof generateKeyPair>> | undefined;

  private async pair() {
    this.keys ??= await generateKeyPair("ES256", { extractable: true });
    return this.keys;
  }

  async jwks(): Promise<JWK[]> {
    const jwk = await exportJWK((await this.pair()).publicKey);
    return [{ ...jwk, kid: this.kid, alg: "ES256", use: "sig" }];
  }

  /** Signs `claims`; `omit` leaves out exp or iat, to test that verifiers refuse such tokens. */
  async sign(claims: Record<string, unknown>, ttlSeconds = 900, omit: ("exp" | "iat")[] = []): Promise<string> {
    const jwt = new SignJWT(claims).setProtectedHeader({ alg: "ES256", kid: this.kid, typ: "JWT" }).setIssuer(tokenIssuer).setAudience(tokenAudience);
    if (!omit.includes("iat")) jwt.setIssuedAt();
    if (!omit.includes("exp")) jwt.setExpirationTime(Math.floor(Date.now() / 1000) + ttlSeconds);
    return jwt.sign((await this.pair()).privateKey);
  }

  user(userId: string, roles = ["customer"], email = `${userId.slice(0, 8)}@example.test`, omit: ("exp" | "iat")[] = []) {
    return this.sign({ sub: userId, roles, email, email_verified: true }, 900, omit);
  }

  service(name: string, omit: ("exp" | "iat")[] = []) {
    return this.sign({ sub: `service:${name}`, roles: [serviceRole], svc: name }, 900, omit);
  }

  /** A service without tables that trusts this issuer: a few handlers under a service's name, for tests of the kit and the edge. */
  fixture(name: AnyServiceDefinition["name"], routes: AnyServiceDefinition["routes"]): AnyServiceDefinition {
    return this.trustedBy({ name, entities: [], migrations: [], routes } as AnyServiceDefinition);
  }

  /** The same service, trusting this issuer's tokens and using its service credential instead of Auth's. */
  trustedBy<Def extends AnyServiceDefinition>(def: Def): Def {
    return { ...def, publicKeys: () => () => this.jwks(), serviceCredentials: () => ({ token: () => this.service(def.name) }) };
  }
}
