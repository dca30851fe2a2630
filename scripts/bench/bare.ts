/**
 * The "bare Connect" rows of `npm run bench`: a minimal connect-node server
 * (connectNodeAdapter on an h2c server, gRPC, no interceptors) answering one RPC
 * with the same SQL as the service through a plain pg pool, mapped to the generated
 * response message by the service's own mapping code, so the answer has the same
 * wire shape. What the real service costs beyond it is what the kit costs: auth,
 * validation, logging, metrics, the EntityManager, MikroORM's connection layer.
 * It does no authentication: the user of GetMyProfile is the bench's.
 */
import { createServer, type Http2Server, type ServerHttp2Session } from "node:http2";
import type { ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import pg from "pg";
import { type GetProductRequest, ProductService } from "../../gen/ecommerce/product/v1/product_pb.js";
import { UserService } from "../../gen/ecommerce/user/v1/user_pb.js";
import type { EntityManager } from "../../kit/db.ts";
import { notFound } from "../../kit/errors.ts";
import type { Sql } from "../../kit/sql.ts";
import { loadProduct } from "../../services/product/catalog.ts";
import { type ProfileFields, profileColumns, profileMessage } from "../../services/user/mapping.ts";

export interface BareServer {
  url: string;
  stop(): Promise<void>;
}

async function serve(databaseUrl: string, routes: (router: ConnectRouter, pool: pg.Pool) => void): Promise<BareServer> {
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 10 });
  const server: Http2Server = createServer(connectNodeAdapter({ routes: (router) => routes(router, pool) }));
  const sessions = new Set<ServerHttp2Session>();
  server.on("session", (s) => {
    sessions.add(s);
    s.once("close", () => sessions.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `http://127.0.0.1:${(server.address() as { port: number }).port}`,
    async stop() {
      const closed = new Promise<void>((r) => server.close(() => r()));
      for (const s of sessions) s.close(); // the generators' sessions would hold the server open
      await closed;
      await pool.end();
    },
  };
}

/** The kit's Sql over a plain pg pool: the same `$n` text and bound parameters, sent by pg. */
function poolSql(pool: pg.Pool): Sql {
  const all = async <Row extends object>(text: string, params: readonly unknown[] = []) => (await pool.query(text, params as unknown[])).rows as Row[];
  return {
    em: undefined as unknown as EntityManager, // loadProduct never uses it
    all,
    one: async <Row extends object>(text: string, params: readonly unknown[] = []) => (await all<Row>(text, params))[0],
    run: async (text: string, params: readonly unknown[] = []) => (await pool.query(text, params as unknown[])).rowCount ?? 0,
  };
}

/** GetMyProfile for `userId`: the service's one statement (its column list, a profile by user id), mapped by the service's profileMessage. */
export function bareUserServer(databaseUrl: string, userId: string): Promise<BareServer> {
  return serve(databaseUrl, (router, pool) =>
    router.service(UserService, {
      async getMyProfile() {
        const { rows } = await pool.query<ProfileFields>(`select ${profileColumns} from user_profiles p where p.user_id = $1`, [userId]);
        if (!rows[0]) throw notFound("profile", userId);
        return { profile: profileMessage(rows[0]) };
      },
    }),
  );
}

/** GetProduct by id for an anonymous caller: the service's own loadProduct (its statements) over a plain pool. */
export function bareProductServer(databaseUrl: string): Promise<BareServer> {
  return serve(databaseUrl, (router, pool) => {
    const db = poolSql(pool);
    router.service(ProductService, {
      async getProduct(req: GetProductRequest) {
        const id = req.lookup.case === "id" ? req.lookup.value : "";
        const product = await loadProduct(db, id, { admin: false });
        if (!product) throw notFound("product", id);
        return { product };
      },
    });
  });
}
