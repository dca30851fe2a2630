/**
 * `npm run breaking [-- <git-ref>]`: reports contract changes in proto/ that
 * would break clients generated from <git-ref> (default: main), using buf's
 * FILE rules from buf.yaml.
 *
 * The ref's proto/ is exported with `git archive` into a temporary workspace
 * beside the same vendored third_party/proto module, so both sides resolve imports alike
 * (the imports a plain `.git#ref=` input of proto/ alone would miss).
 * Until v1 is declared stable this is informational; then .ci/run gates on it.
 */
import { execFileSync } from "node:child_process";
import { cpSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const againstWorkspaceYaml = `version: v2
modules:
  - path: proto
  - path: third_party
`;

/** Builds a buf workspace in a temporary folder from proto/ at a git ref. */
export function workspaceAtRef(ref: string): string {
  const dir = mkdtempSync(join(tmpdir(), "proto-at-ref-"));
  const tar = execFileSync("git", ["archive", "--format=tar", ref, "proto"], { maxBuffer: 256 << 20 });
  execFileSync("tar", ["-x", "-C", dir], { input: tar });
  return completeWorkspace(dir);
}

/** Builds a buf workspace in a temporary folder from a copy of a proto/ folder. */
export function workspaceFromFolder(protoDir: string): string {
  const dir = mkdtempSync(join(tmpdir(), "proto-copy-"));
  cpSync(protoDir, join(dir, "proto"), { recursive: true });
  return completeWorkspace(dir);
}

function completeWorkspace(dir: string): string {
  cpSync("third_party/proto", join(dir, "third_party"), { recursive: true });
  writeFileSync(join(dir, "buf.yaml"), againstWorkspaceYaml);
  return dir;
}

/** Runs buf breaking of the working tree against a workspace; returns buf's report (empty when compatible). */
export function breakingAgainst(workspace: string): { ok: boolean; report: string } {
  try {
    execFileSync("buf", ["breaking", "proto", "--against", join(workspace, "proto"), "--error-format", "text"], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
    });
    return { ok: true, report: "" };
  } catch (error) {
    const e = error as { stdout?: string; stderr?: string };
    return { ok: false, report: `${e.stdout ?? ""}${e.stderr ?? ""}`.trim() };
  }
}

if (import.meta.main) {
  const ref = process.argv[2] ?? "main";
  const workspace = workspaceAtRef(ref);
  try {
    const { ok, report } = breakingAgainst(workspace);
    if (ok) {
      console.log(`proto/ is wire- and source-compatible with ${ref}.`);
    } else {
      console.error(`Breaking changes against ${ref}:\n${report}`);
      console.error("Either keep the old field/RPC (deprecate it) or, before v1 is stable, note the break in the issue.");
      process.exitCode = 1;
    }
  } finally {
    rmSync(workspace, { recursive: true, force: true });
  }
}
