/**
 * ecommerce.common.v1.DeadLetterService, served by every service with event
 * consumers: list dead-lettered events, replay one after fixing the cause.
 */
import { create } from "@bufbuild/protobuf";
import type { ConnectRouter } from "@connectrpc/connect";
import type { MikroORM } from "@mikro-orm/postgresql";
import { type DeadLetter, DeadLetterSchema, DeadLetterService } from "../../gen/ecommerce/common/v1/dead_letter_pb.js";
import { timestampOf } from "../convert.ts";
import { notFound } from "../errors.ts";
import { pageOf } from "../paging.ts";
import { sqlOf } from "../sql.ts";
import type { EventConsumers } from "./consumer.ts";

interface Row {
  id: string;
  event_id: string;
  subject: string;
  consumer: string;
  delivery_count: number;
  last_error: string;
  payload: Buffer;
  dead_lettered_at: Date | string;
  replayed_at: Date | string | null;
}

const toMessage = (r: Row): DeadLetter =>
  create(DeadLetterSchema, {
    id: r.id,
    eventId: r.event_id,
    subject: r.subject,
    consumer: r.consumer,
    deliveryCount: r.delivery_count,
    lastError: r.last_error,
    payload: new Uint8Array(r.payload),
    deadLetteredAt: timestampOf(r.dead_lettered_at),
    replayedAt: timestampOf(r.replayed_at),
  });

export function deadLetterRoutes(router: ConnectRouter, orm: MikroORM, consumers: EventConsumers): void {
  // An event that could not be decoded, or had no event id, is named by its Nats-Msg-Id or "<STREAM>:<sequence>".
  const select =
    "select id, coalesce(event_id::text, message_key) as event_id, subject, consumer, delivery_count, last_error, payload, dead_lettered_at, replayed_at from dead_letters";
  router.service(DeadLetterService, {
    async listDeadLetters(req) {
      const pages = pageOf(req, { id: "uuid" });
      const { after: cursor, size } = pages;
      // UUIDv7 ids sort by creation time: newest first is id descending.
      const rows = await sqlOf(orm.em.fork()).all<Row>(
        `${select} where ($1 or replayed_at is null) and ($2::uuid is null or id < $2::uuid) order by id desc limit $3`,
        [req.includeReplayed, cursor?.id ?? null, size + 1],
      );
      const page = rows.slice(0, size);
      return {
        deadLetters: page.map(toMessage),
        nextPageToken: rows.length > size ? pages.next({ id: page[page.length - 1]!.id }) : "",
      };
    },
    async replayDeadLetter(req) {
      const db = sqlOf(orm.em.fork());
      if (!(await db.one<Row>(`${select} where id = $1`, [req.id]))) throw notFound("dead letter", req.id);
      await consumers.replay(req.id);
      return { deadLetter: toMessage((await db.one<Row>(`${select} where id = $1`, [req.id]))!) };
    },
  });
}
