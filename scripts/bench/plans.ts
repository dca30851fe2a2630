/**
 * What an EXPLAIN (ANALYZE, FORMAT JSON) plan says about a statement's scaling, for
 * the explain benches and the plan tests: the indexes it reads, and the shapes that
 * grow with the table rather than with the page: a scan that read more rows than
 * `bounded`, those it returned and those its filter removed (a count's `limit 10001`
 * over a seq scan stops early and is not one), and a Sort over more than `bounded`
 * rows (a top-N sort of a small match is fine).
 */
import type pg from "pg";

export interface PlanNode {
  "Node Type": string;
  "Relation Name"?: string;
  "Index Name"?: string;
  "Actual Rows"?: number;
  "Actual Loops"?: number;
  "Rows Removed by Filter"?: number;
  "Shared Hit Blocks"?: number;
  "Shared Read Blocks"?: number;
  Plans?: PlanNode[];
}

export interface Explained {
  executionMs: number;
  plan: PlanNode;
}

export async function explainAnalyze(pool: pg.Pool, text: string, values: unknown[]): Promise<Explained> {
  const { rows } = await pool.query<{ "QUERY PLAN": { "Execution Time": number; Plan: PlanNode }[] }>(`explain (analyze, buffers, format json) ${text}`, values);
  const [top] = rows[0]!["QUERY PLAN"];
  return { executionMs: top!["Execution Time"], plan: top!.Plan };
}

function* nodes(n: PlanNode): Generator<PlanNode> {
  yield n;
  for (const c of n.Plans ?? []) yield* nodes(c);
}

const rowsRead = (n: PlanNode) => ((n["Actual Rows"] ?? 0) + (n["Rows Removed by Filter"] ?? 0)) * (n["Actual Loops"] ?? 1);

export interface PlanShape {
  indexes: string[];
  /** "Seq Scan on orders (2000000 rows)", "Sort (54000 rows)": what grows with the table. */
  problems: string[];
  /** Sort nodes, of any size. */
  sorts: number;
  buffers: { hit: number; read: number };
}

export function shapeOf(plan: PlanNode, bounded = 12_000): PlanShape {
  const indexes = new Set<string>();
  const problems: string[] = [];
  let sorts = 0;
  for (const n of nodes(plan)) {
    if (n["Index Name"]) indexes.add(n["Index Name"]);
    if (n["Node Type"] === "Seq Scan" && rowsRead(n) > bounded) problems.push(`Seq Scan on ${n["Relation Name"]} (${rowsRead(n)} rows)`);
    // An index read far past what it returns (a filter the index does not serve).
    else if (n["Relation Name"] && rowsRead(n) > bounded) problems.push(`${n["Node Type"]} of ${n["Relation Name"]}${n["Index Name"] ? ` via ${n["Index Name"]}` : ""} (${rowsRead(n)} rows)`);
    if (n["Node Type"].endsWith("Sort")) {
      sorts++;
      const input = (n.Plans ?? []).reduce((s, c) => s + (c["Actual Rows"] ?? 0) * (c["Actual Loops"] ?? 1), 0);
      if (input > bounded) problems.push(`Sort (${input} rows)`);
    }
  }
  return { indexes: [...indexes], problems, sorts, buffers: { hit: plan["Shared Hit Blocks"] ?? 0, read: plan["Shared Read Blocks"] ?? 0 } };
}
