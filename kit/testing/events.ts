/**
 * What a test reads back from the bus: every event of one type currently on a
 * service's stream, oldest first, through an ephemeral ordered consumer (the
 * machines' nats-server 2.9 predates filter_subjects, so it reads the whole
 * stream and keeps the subject asked for).
 */
import { type DescMessage, fromBinary, type MessageShape } from "@bufbuild/protobuf";
import { jetstream } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { subjectOf } from "../events/contracts.ts";

export async function eventsOnStream<D extends DescMessage>(nc: NatsConnection, stream: string, schema: D): Promise<MessageShape<D>[]> {
  const js = jetstream(nc);
  const info = await (await js.jetstreamManager()).streams.info(stream).catch(() => undefined);
  if (!info || info.state.messages === 0) return [];
  const consumer = await js.consumers.get(stream);
  const subject = subjectOf(schema);
  const events: MessageShape<D>[] = [];
  for await (const m of await consumer.fetch({ max_messages: info.state.messages, expires: 2_000 })) {
    if (m.subject === subject) events.push(fromBinary(schema, m.data));
    if (m.info.pending === 0) break;
  }
  return events;
}
