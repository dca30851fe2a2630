/**
 * gRPC server reflection (grpc.reflection.v1 and the older v1alpha that many
 * tools still ask for), so grpcurl, Postman and grpcui can discover and call
 * every service without the proto files.
 */
import { type DescFile, type Registry, toBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import type { ConnectRouter } from "@connectrpc/connect";
import { ServerReflection as ReflectionV1 } from "../gen/grpc/reflection/v1/reflection_pb.js";
import { ServerReflection as ReflectionV1alpha } from "../gen/grpc/reflection/v1alpha/reflection_pb.js";

type Answer =
  | { case: "fileDescriptorResponse"; value: { fileDescriptorProto: Uint8Array[] } }
  | { case: "listServicesResponse"; value: { service: { name: string }[] } }
  | { case: "allExtensionNumbersResponse"; value: { baseTypeName: string; extensionNumber: number[] } }
  | { case: "errorResponse"; value: { errorCode: number; errorMessage: string } };

type Request = {
  messageRequest:
    | { case: "fileByFilename" | "fileContainingSymbol" | "allExtensionNumbersOfType" | "listServices"; value: string }
    | { case: "fileContainingExtension"; value: { containingType: string; extensionNumber: number } }
    | { case: undefined; value?: undefined };
};

/** The file and its transitive imports, each once (clients may ask again for what they lack). */
function withDependencies(file: DescFile): Uint8Array[] {
  const seen = new Map<string, DescFile>();
  const visit = (f: DescFile) => {
    if (seen.has(f.proto.name)) return;
    seen.set(f.proto.name, f);
    f.dependencies.forEach(visit);
  };
  visit(file);
  return [...seen.values()].map((f) => toBinary(FileDescriptorProtoSchema, f.proto));
}

function answer(registry: Registry, files: Map<string, DescFile>, services: string[], req: Request): Answer {
  const notFound = (what: string): Answer => ({ case: "errorResponse", value: { errorCode: 5, errorMessage: `${what} not found` } });
  const r = req.messageRequest;
  switch (r.case) {
    case "listServices":
      return { case: "listServicesResponse", value: { service: services.map((name) => ({ name })) } };
    case "fileByFilename": {
      const f = files.get(r.value);
      return f ? { case: "fileDescriptorResponse", value: { fileDescriptorProto: withDependencies(f) } } : notFound(`file ${r.value}`);
    }
    case "fileContainingSymbol": {
      const symbol = r.value.replace(/^\./, "");
      let d = registry.get(symbol);
      if (!d) {
        // A method or field: look up its parent.
        const parent = registry.get(symbol.slice(0, symbol.lastIndexOf(".")));
        if (parent && (parent.kind === "service" || parent.kind === "message")) d = parent;
      }
      if (!d) return notFound(`symbol ${symbol}`);
      return { case: "fileDescriptorResponse", value: { fileDescriptorProto: withDependencies(d.file) } };
    }
    case "fileContainingExtension": {
      const ext = registry.getExtensionFor(registry.getMessage(r.value.containingType)!, r.value.extensionNumber);
      return ext ? { case: "fileDescriptorResponse", value: { fileDescriptorProto: withDependencies(ext.file) } } : notFound("extension");
    }
    case "allExtensionNumbersOfType": {
      const numbers: number[] = [];
      for (const t of registry) if (t.kind === "extension" && t.extendee.typeName === r.value) numbers.push(t.number);
      return { case: "allExtensionNumbersResponse", value: { baseTypeName: r.value, extensionNumber: numbers } };
    }
    default:
      return { case: "errorResponse", value: { errorCode: 3, errorMessage: "empty reflection request" } };
  }
}

/** Serves reflection for the given files (every file a served service is declared in, plus its imports). */
export function reflectionRoutes(router: ConnectRouter, registry: Registry, services: string[]): void {
  const files = new Map<string, DescFile>();
  for (const t of registry) if (t.kind !== "extension" || t.file) files.set(t.file.proto.name, t.file);
  for (const f of [...files.values()]) for (const d of f.dependencies) files.set(d.proto.name, d);
  const impl = {
    async *serverReflectionInfo(requests: AsyncIterable<Request & { host: string }>) {
      for await (const req of requests) {
        yield { validHost: req.host, originalRequest: req, messageResponse: answer(registry, files, services, req) };
      }
    },
  };
  // biome-ignore lint: both versions share one implementation; their generated types differ only by package.
  router.service(ReflectionV1, impl as never);
  router.service(ReflectionV1alpha, impl as never);
}
