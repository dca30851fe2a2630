/**
 * Every INTERNAL RPC names the services allowed to call it (allowed_callers),
 * only with catalog names and never its own service; no other RPC names any,
 * since the list means nothing there. The kit's auth interceptor enforces it.
 */
import { type DescMethod, type DescService, getOption, hasOption } from "@bufbuild/protobuf";
import { beforeAll, describe, expect, it } from "vitest";
import { AccessPolicy, access, allowed_callers } from "../../gen/ecommerce/common/v1/access_pb.js";
import { serviceCatalog, serviceNames } from "../../kit/catalog.ts";
import { loadRegistry } from "./registry.ts";

let methods: DescMethod[] = [];

beforeAll(async () => {
  const { registry } = await loadRegistry();
  const services = [...registry].filter((t): t is DescService => t.kind === "service" && t.typeName.startsWith("ecommerce."));
  methods = services.flatMap((s) => s.methods);
});

const nameOf = (m: DescMethod) => `${m.parent.typeName}/${m.name}`;
const callersOf = (m: DescMethod) => (hasOption(m, allowed_callers) ? getOption(m, allowed_callers) : []);
const isInternal = (m: DescMethod) => getOption(m, access) === AccessPolicy.INTERNAL;
/** The catalog service whose proto package declares the method. */
const ownerOf = (m: DescMethod) => serviceNames.find((n) => m.parent.file.proto.package === serviceCatalog[n].protoPackage);

describe("allowed callers of INTERNAL RPCs", () => {
  it("are named on every INTERNAL RPC", () => {
    const internal = methods.filter(isInternal);
    expect(internal.length).toBeGreaterThan(20);
    expect(internal.filter((m) => callersOf(m).length === 0).map(nameOf)).toEqual([]);
  });

  it("are catalog service names, each once, never the RPC's own service", () => {
    const bad = methods.filter(isInternal).flatMap((m) => {
      const callers = callersOf(m);
      return [
        ...callers.filter((c) => !(serviceNames as string[]).includes(c)).map((c) => `${nameOf(m)}: "${c}" is not a catalog service`),
        ...callers.filter((c, i) => callers.indexOf(c) !== i).map((c) => `${nameOf(m)}: "${c}" twice`),
        ...callers.filter((c) => c === ownerOf(m)).map((c) => `${nameOf(m)}: names its own service "${c}"`),
      ];
    });
    expect(bad).toEqual([]);
  });

  it("appear on INTERNAL RPCs only", () => {
    expect(methods.filter((m) => !isInternal(m) && callersOf(m).length > 0).map(nameOf)).toEqual([]);
  });
});
