/** The error of a call that must fail, as tests read it: code, ErrorInfo reason, first BadRequest field, metadata. */
import { ConnectError } from "@connectrpc/connect";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { errorFields } from "../errors.ts";

export async function failure(call: Promise<unknown>) {
  const error = await call.then(
    () => undefined,
    (e: unknown) => ConnectError.from(e),
  );
  if (!error) throw new Error("expected the call to fail");
  const info = error.findDetails(ErrorInfoSchema)[0];
  return { code: error.code, reason: info?.reason, field: errorFields(error)[0], metadata: info?.metadata ?? {}, message: error.rawMessage, error };
}
