/**
 * The contract toolchain: generated code is in step with proto/, lint and
 * format are clean, plain protoc compiles what buf compiles (partners use it,
 * from a clone without Node: the README's command is run verbatim), vendored
 * protos are what they claim to be, and the breaking-change check detects a break.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, dirname, join, relative } from "node:path";
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
    const r = run("protoc", ["-I", "proto", "-I", "third_party/proto", `--descriptor_set_out=${set}`, ...protoFiles()]);
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

  it("the committed buf/validate/validate.proto is what scripts/export-validate-proto.ts prints from the installed package", () => {
    const r = run(process.execPath, ["scripts/export-validate-proto.ts", "--check"]);
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
  });

  it("the reconstructed buf/validate/validate.proto matches the package's descriptor", () => {
    // Compile the printed file with protoc and compare message and field numbers with the package.
    const out = mkdtempSync(join(tmpdir(), "validate-"));
    temps.push(out);
    const set = join(out, "v.binpb");
    const r = run("protoc", ["-I", "third_party/proto", `--descriptor_set_out=${set}`, "buf/validate/validate.proto"]);
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

  it("vendors googleapis' google/rpc protos and their licence verbatim from google-proto-files", () => {
    const pkg = join(repoRoot, "node_modules", "google-proto-files");
    const vendored = join(repoRoot, "third_party", "proto", "google", "rpc");
    for (const name of ["error_details.proto", "status.proto"]) {
      expect(readFileSync(join(vendored, name), "utf8"), name).toBe(readFileSync(join(pkg, "google", "rpc", name), "utf8"));
    }
    expect(readFileSync(join(vendored, "LICENSE"), "utf8")).toBe(readFileSync(join(pkg, "LICENSE"), "utf8"));
  });
});

describe("the README's partner commands", () => {
  /** The shell block right after the README's `<!-- partner-commands -->` marker, verbatim. */
  function partnerBlock(): string {
    const readme = readFileSync(join(repoRoot, "README.md"), "utf8");
    const m = /<!-- partner-commands[^>]*-->\s*```sh\n([\s\S]*?)```/.exec(readme);
    if (!m) throw new Error("README.md has no ```sh block after <!-- partner-commands -->");
    return m[1]!;
  }

  /** What a partner clones: the tracked and new files of the working tree, without node_modules and .build. */
  function cleanCopy(): string {
    const dir = mkdtempSync(join(tmpdir(), "partner-clone-"));
    temps.push(dir);
    const listed = execFileSync("git", ["ls-files", "-z", "--cached", "--others", "--exclude-standard"], { cwd: repoRoot, encoding: "utf8" });
    for (const path of listed.split("\0").filter(Boolean)) {
      if (/^(node_modules|\.build)(\/|$)/.test(path) || !existsSync(join(repoRoot, path))) continue;
      mkdirSync(dirname(join(dir, path)), { recursive: true });
      cpSync(join(repoRoot, path), join(dir, path), { verbatimSymlinks: true });
    }
    return dir;
  }

  it("compile the contracts with plain protoc and no Node, and generate Python without a `grpc` package", () => {
    const block = partnerBlock();
    const clone = cleanCopy();
    expect(existsSync(join(clone, "node_modules")) || existsSync(join(clone, ".build"))).toBe(false);
    // No Node: node_modules/.bin is off the PATH and absent from the copy anyway.
    const path = (process.env.PATH ?? "").split(delimiter).filter((p) => !p.includes("node_modules")).join(delimiter);
    const r = spawnSync("sh", ["-e", "-c", block], { cwd: clone, env: { ...process.env, PATH: path }, encoding: "utf8" });
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);

    const set = /--descriptor_set_out=(\S+)/.exec(block)?.[1];
    expect(set, "the block writes a descriptor set").toBeDefined();
    const names = execFileSync(
      process.execPath,
      ["--input-type=module", "-e", `
        import { fromBinary } from "@bufbuild/protobuf";
        import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
        import { readFileSync } from "node:fs";
        console.log(JSON.stringify(fromBinary(FileDescriptorSetSchema, readFileSync(${JSON.stringify(join(clone, set!))})).file.map((f) => f.name)));
      `],
      { cwd: repoRoot, encoding: "utf8" },
    );
    const compiled = new Set(JSON.parse(names) as string[]);
    expect(protoFiles().filter((f) => !compiled.has(f))).toEqual([]);

    // grpcio is the Python package `grpc`: a generated grpc/ folder beside the partner's code would shadow it.
    const py = /--python_out=(\S+)/.exec(block)?.[1];
    expect(py, "the block shows a Python generation").toBeDefined();
    const top = readdirSync(join(clone, py!));
    expect(top).toContain("ecommerce");
    expect(top).not.toContain("grpc");
  });
});
