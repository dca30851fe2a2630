/**
 * Loads every generated file under gen/ into one registry, so contract tests
 * can walk all services, methods and event messages of the mesh.
 */
import { readdirSync } from "node:fs";
import { join, relative } from "node:path";
import { pathToFileURL } from "node:url";
import { createRegistry, type DescFile, type Registry } from "@bufbuild/protobuf";

export const repoRoot = join(import.meta.dirname, "..", "..");
export const genDir = join(repoRoot, "gen");

function listFiles(dir: string, suffix: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && e.name.endsWith(suffix))
    .map((e) => join(e.parentPath, e.name))
    .sort();
}

export async function loadGeneratedFiles(): Promise<DescFile[]> {
  const files: DescFile[] = [];
  for (const path of listFiles(genDir, "_pb.js")) {
    const mod = (await import(pathToFileURL(path).href)) as Record<string, unknown>;
    const exported = Object.entries(mod).filter(([name]) => name.startsWith("file_"));
    if (exported.length !== 1) throw new Error(`${relative(repoRoot, path)}: expected one file_ export`);
    files.push(exported[0]![1] as DescFile);
  }
  return files;
}

export async function loadRegistry(): Promise<{ files: DescFile[]; registry: Registry }> {
  const files = await loadGeneratedFiles();
  return { files, registry: createRegistry(...files) };
}

export function protoFiles(): string[] {
  return listFiles(join(repoRoot, "proto"), ".proto").map((p) => relative(join(repoRoot, "proto"), p));
}
