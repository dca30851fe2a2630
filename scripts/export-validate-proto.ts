/**
 * Prints buf/validate/validate.proto back out of the descriptor that
 * @bufbuild/protovalidate embeds, into the committed
 * third_party/proto/buf/validate/validate.proto (`--check`: only compare, exit 1
 * when the committed copy is not what the installed package prints).
 *
 * Why: the package ships the compiled descriptor but not the .proto source, and we
 * have no network to fetch it from the Buf Schema Registry. buf and plain protoc
 * (-I third_party/proto) both need the source to resolve
 * `import "buf/validate/validate.proto"`, and a partner's clone must compile without
 * Node, so the printed copy is committed; `npm run gen` rewrites it after an upgrade.
 * Generated code never uses this copy: protoc-gen-es's rewrite_imports points it at
 * the package itself, which also carries the full predefined-rule options that this
 * printer leaves out.
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { file_buf_validate_validate } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { isFieldSet } from "@bufbuild/protobuf";
import {
  type DescriptorProto,
  FieldDescriptorProtoSchema,
  FieldOptionsSchema,
  type EnumDescriptorProto,
  type FieldDescriptorProto,
  FieldDescriptorProto_Label as Label,
  FieldDescriptorProto_Type as Type,
} from "@bufbuild/protobuf/wkt";

const scalarNames: Partial<Record<Type, string>> = {
  [Type.DOUBLE]: "double", [Type.FLOAT]: "float", [Type.INT64]: "int64", [Type.UINT64]: "uint64",
  [Type.INT32]: "int32", [Type.FIXED64]: "fixed64", [Type.FIXED32]: "fixed32", [Type.BOOL]: "bool",
  [Type.STRING]: "string", [Type.BYTES]: "bytes", [Type.UINT32]: "uint32", [Type.SFIXED32]: "sfixed32",
  [Type.SFIXED64]: "sfixed64", [Type.SINT32]: "sint32", [Type.SINT64]: "sint64",
};

function typeOf(f: FieldDescriptorProto): string {
  if (f.type === Type.MESSAGE || f.type === Type.ENUM || f.type === Type.GROUP) return f.typeName;
  const name = scalarNames[f.type];
  if (!name) throw new Error(`unsupported field type ${f.type} on ${f.name}`);
  return name;
}

function label(f: FieldDescriptorProto): string {
  if (f.label === Label.REPEATED) return "repeated ";
  if (f.label === Label.REQUIRED) return "required ";
  return "optional ";
}

function field(f: FieldDescriptorProto): string {
  const opts: string[] = [];
  if (f.defaultValue !== undefined && f.defaultValue !== "") {
    opts.push(`default = ${f.type === Type.STRING ? JSON.stringify(f.defaultValue) : f.defaultValue}`);
  }
  if (f.options && isFieldSet(f.options, FieldOptionsSchema.field.packed)) opts.push(`packed = ${f.options.packed}`);
  if (f.options?.deprecated) opts.push("deprecated = true");
  const suffix = opts.length ? ` [${opts.join(", ")}]` : "";
  return `${typeOf(f)} ${f.name} = ${f.number}${suffix};`;
}

function ranges(kind: string, rs: { start: number; end: number }[], exclusiveEnd: boolean): string[] {
  return rs.map((r) => {
    const end = exclusiveEnd ? r.end - 1 : r.end;
    const last = end >= 536870911 ? "max" : String(end);
    return `${kind} ${r.start === end ? r.start : `${r.start} to ${last}`};`;
  });
}

function enumBlock(e: EnumDescriptorProto, indent: string): string[] {
  const out = [`${indent}enum ${e.name} {`];
  for (const v of e.value) out.push(`${indent}  ${v.name} = ${v.number};`);
  out.push(...ranges("reserved", e.reservedRange, false).map((l) => `${indent}  ${l}`));
  if (e.reservedName.length) out.push(`${indent}  reserved ${e.reservedName.map((n) => JSON.stringify(n)).join(", ")};`);
  out.push(`${indent}}`);
  return out;
}

function messageBlock(m: DescriptorProto, indent: string): string[] {
  const i = `${indent}  `;
  const out = [`${indent}message ${m.name} {`];
  for (const e of m.enumType) out.push(...enumBlock(e, i));
  for (const n of m.nestedType) out.push(...messageBlock(n, i));
  // Declaration order is kept (a oneof is printed where its first field stood),
  // so the compiled descriptor matches the package's field for field.
  const inOneof = (f: FieldDescriptorProto) => isFieldSet(f, FieldDescriptorProtoSchema.field.oneofIndex);
  const printedOneofs = new Set<number>();
  for (const f of m.field) {
    if (!inOneof(f)) {
      out.push(`${i}${label(f)}${field(f)}`);
      continue;
    }
    if (printedOneofs.has(f.oneofIndex)) continue;
    printedOneofs.add(f.oneofIndex);
    out.push(`${i}oneof ${m.oneofDecl[f.oneofIndex]?.name} {`);
    for (const g of m.field.filter((x) => inOneof(x) && x.oneofIndex === f.oneofIndex)) out.push(`${i}  ${field(g)}`);
    out.push(`${i}}`);
  }
  out.push(...ranges("extensions", m.extensionRange, true).map((l) => `${i}${l}`));
  out.push(...ranges("reserved", m.reservedRange, true).map((l) => `${i}${l}`));
  if (m.reservedName.length) out.push(`${i}reserved ${m.reservedName.map((n) => JSON.stringify(n)).join(", ")};`);
  if (m.extension.length) throw new Error(`nested extensions in ${m.name} are not supported`);
  out.push(`${indent}}`);
  return out;
}

export function printValidateProto(): string {
  const p = file_buf_validate_validate.proto;
  const out = [
    "// Generated by scripts/export-validate-proto.ts from the descriptor embedded in",
    "// @bufbuild/protovalidate. Do not edit. Predefined-rule CEL options are omitted.",
    "// The source it describes is bufbuild/protovalidate's, Copyright Buf Technologies, Inc.,",
    "// licensed under the Apache License, Version 2.0 (http://www.apache.org/licenses/LICENSE-2.0).",
    `syntax = "${p.syntax || "proto2"}";`,
    "",
    `package ${p.package};`,
    "",
    ...p.dependency.map((d) => `import "${d}";`),
    "",
  ];
  if (p.options?.goPackage) out.push(`option go_package = "${p.options.goPackage}";`);
  if (p.options?.javaPackage) out.push(`option java_package = "${p.options.javaPackage}";`);
  if (p.options?.javaMultipleFiles) out.push("option java_multiple_files = true;");
  out.push("");
  for (const e of p.enumType) out.push(...enumBlock(e, ""), "");
  for (const m of p.messageType) out.push(...messageBlock(m, ""), "");
  const byExtendee = new Map<string, FieldDescriptorProto[]>();
  for (const x of p.extension) byExtendee.set(x.extendee, [...(byExtendee.get(x.extendee) ?? []), x]);
  for (const [extendee, fields] of byExtendee) {
    out.push(`extend ${extendee} {`, ...fields.map((f) => `  ${label(f)}${field(f)}`), "}", "");
  }
  return out.join("\n");
}

/** Where the committed copy lives, relative to the repository root. */
export const validateProtoPath = "third_party/proto/buf/validate/validate.proto";

if (import.meta.main) {
  const target = join(import.meta.dirname, "..", validateProtoPath);
  const printed = printValidateProto();
  if (process.argv.includes("--check")) {
    let committed = "";
    try {
      committed = readFileSync(target, "utf8");
    } catch {}
    if (committed !== printed) {
      console.error(`${validateProtoPath} is not what @bufbuild/protovalidate prints: run \`npm run gen\` and commit it`);
      process.exit(1);
    }
  } else {
    mkdirSync(dirname(target), { recursive: true });
    writeFileSync(target, printed);
    console.log(`wrote ${validateProtoPath}`);
  }
}
