/**
 * The contract toolchain: generated code is in step with proto/, lint and
 * format are clean, plain protoc compiles what buf compiles (partners use it),
 * and the breaking-change check detects a break.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { breakingAgainst, workspaceAtRef, workspaceFromFolder } from "../../scripts/breaking.ts";
import { genDir, protoFiles, repoRoot } from "./registry.ts";

const bin = join(repoRoot, "node_modules", ".bin");
const env = { ...process.env, PATH: `${bin}:${process.env.PATH}` };

function run(cmd: string, args: string[]) {
  return spawnSync(cmd, args, { cwd: repoRoot, env, encoding: "utf8" });
}

function snapshot(dir: string): Map<string, string> {
  const files = readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile());
  return new Map(files.map((e) => [relative(dir, join(e.parentPath, e.name)), readFileSync(join(e.parentPath, e.name), "utf8")]));
}

const temps: string[] = [];
afterAll(() => temps.forEach((d) => rmSync(d, { recursive: true, force: true })));

describe("contract toolchain", () => {
  it("gen/ is exactly what buf generate writes from proto/ (run `npm run gen` and commit when this fails)", () => {
    const out = mkdtempSync(join(tmpdir(), "gen-check-"));
    temps.push(out);
    const r = run("buf", ["generate", "-o", out]);
    expect(r.status, r.stderr).toBe(0);
    const fresh = snapshot(join(out, "gen"));
    const committed = snapshot(genDir);
    expect([...committed.keys()].sort()).toEqual([...fresh.keys()].sort());
    for (const [path, content] of fresh) expect(committed.get(path), `gen/${path} is stale`).toBe(content);
  });

  it("buf lint (STANDARD + COMMENTS) and buf format are clean", () => {
    const lint = run("buf", ["lint"]);
    expect(lint.stdout + lint.stderr).toBe("");
    expect(lint.status).toBe(0);
    const format = run("buf", ["format", "proto", "--diff", "--exit-code"]);
    expect(format.stdout, "run `buf format -w proto`").toBe("");
    expect(format.status).toBe(0);
  });

  it("plain protoc compiles every proto file with the same include paths", () => {
    const which = spawnSync("sh", ["-c", "command -v protoc"], { encoding: "utf8" });
    expect(which.status, "protoc is missing: `apt-get install protobuf-compiler` (.ci/run does)").toBe(0);
    const out = mkdtempSync(join(tmpdir(), "protoc-"));
    temps.push(out);
    const set = join(out, "all.binpb");
    const r = run("protoc", ["-I", "proto", "-I", ".build/protovalidate", `--descriptor_set_out=${set}`, ...protoFiles()]);
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    expect(readFileSync(set).length).toBeGreaterThan(1000);
  });

  it("npm run breaking finds no break against the same contracts and reports a deleted field", () => {
    const head = workspaceAtRef("HEAD");
    temps.push(head);
    expect(readFileSync(join(head, "proto/ecommerce/common/v1/money.proto"), "utf8")).toMatch(/message Money/);
    const same = workspaceFromFolder(join(repoRoot, "proto"));
    temps.push(same);
    expect(breakingAgainst(same)).toEqual({ ok: true, report: "" });
    // Give the "old" side a field the working tree lacks: to buf that is a deletion.
    const money = join(same, "proto/ecommerce/common/v1/money.proto");
    writeFileSync(money, readFileSync(money, "utf8").replace(/\}\s*$/, "  // Old.\n  string legacy_note = 3;\n}\n"));
    const result = breakingAgainst(same);
    expect(result.ok).toBe(false);
    expect(result.report).toMatch(/"legacy_note" on message "Money" was deleted/);
  });

  it("the reconstructed buf/validate/validate.proto matches the package's descriptor", () => {
    // Compile the printed file with protoc and compare message and field numbers with the package.
    const out = mkdtempSync(join(tmpdir(), "validate-"));
    temps.push(out);
    const set = join(out, "v.binpb");
    const r = run("protoc", ["-I", ".build/protovalidate", `--descriptor_set_out=${set}`, "buf/validate/validate.proto"]);
    expect(r.status, r.stderr).toBe(0);
    const check = execFileSync(
      process.execPath,
      ["--input-type=module", "-e", `
        import { fromBinary } from "@bufbuild/protobuf";
        import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
        import { file_buf_validate_validate as f } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
        import { readFileSync } from "node:fs";
        const printed = fromBinary(FileDescriptorSetSchema, readFileSync(${JSON.stringify(set)})).file[0];
        const shape = (p) => p.messageType.map((m) => m.name + ":" + m.field.map((x) => x.name + "=" + x.number + "/" + x.type + "/" + x.label).join(","));
        console.log(JSON.stringify(shape(printed)) === JSON.stringify(shape(f.proto)) && printed.extension.length === f.proto.extension.length ? "same" : "different");
      `],
      { cwd: repoRoot, encoding: "utf8" },
    );
    expect(check.trim()).toBe("same");
  });
});
