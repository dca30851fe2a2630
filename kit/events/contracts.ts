/**
 * Reads the event contracts: the subject of an event message and the stream of
 * the file that declares it (ecommerce.common.v1.event / event_stream options).
 * Publishers and consumers are typed from these descriptors alone.
 */
import { type DescFile, type DescMessage, getOption, hasOption } from "@bufbuild/protobuf";
import { event, event_stream } from "../../gen/ecommerce/common/v1/event_pb.js";

export interface StreamSpec {
  name: string;
  subjects: string[];
}

export function subjectOf(schema: DescMessage): string {
  if (!hasOption(schema, event)) throw new Error(`${schema.typeName} is not an event (no ecommerce.common.v1.event option)`);
  return getOption(schema, event).subject;
}

export function streamOf(file: DescFile): StreamSpec {
  if (!hasOption(file, event_stream)) throw new Error(`${file.name}.proto declares no event_stream`);
  const subjects = file.messages.filter((m) => hasOption(m, event)).map(subjectOf);
  return { name: getOption(file, event_stream), subjects };
}

/** Subject dead-lettered events of a consumer are published on, for operators watching the bus. */
export function deadLetterSubject(service: string, subject: string): string {
  return `dlq.${service}.${subject}`;
}

export const deadLetterStream: StreamSpec = { name: "DEAD_LETTERS", subjects: ["dlq.>"] };
