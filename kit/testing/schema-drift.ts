/**
 * Compares a service's MikroORM entities with the database its migrations built.
 * The migrations own the schema (indexes, checks, defaults, foreign keys live
 * there only), so the comparison is about what the ORM reads and writes: every
 * entity's table and column exists, with the same type and nullability, and no
 * NOT NULL column without a default is left out of an entity that inserts rows.
 */
import type { MikroORM } from "@mikro-orm/postgresql";
import { SchemaComparator } from "@mikro-orm/sql";

interface Comparable {
  prepareSchemaForComparison(options: { safe?: boolean; dropTables?: boolean }): Promise<{ fromSchema: unknown; toSchema: unknown }>;
}

/** The differences, one readable line each; empty when entities and migrations agree. */
export async function schemaDrift(orm: MikroORM): Promise<string[]> {
  const generator = orm.schema as unknown as Comparable;
  const { fromSchema, toSchema } = await generator.prepareSchemaForComparison({ safe: true, dropTables: false });
  const comparator = new SchemaComparator(orm.em.getPlatform());
  const diff = comparator.compare(fromSchema as never, toSchema as never);
  const problems: string[] = [];
  for (const name of Object.keys(diff.newTables)) problems.push(`table ${name}: an entity maps it, no migration creates it`);
  for (const [table, t] of Object.entries(diff.changedTables)) {
    for (const name of Object.keys(t.addedColumns)) problems.push(`${table}.${name}: an entity maps it, no migration creates it`);
    for (const [name, c] of Object.entries(t.changedColumns)) {
      for (const property of c.changedProperties) {
        // Defaults and CHECK-constraint value lists belong to the migrations.
        if (property === "default" || property === "comment" || property === "enumItems") continue;
        const from = c.fromColumn;
        const to = c.column;
        problems.push(`${table}.${name}: ${property} differs (database ${describe(from)}, entity ${describe(to)})`);
      }
    }
    for (const [name, column] of Object.entries(t.removedColumns)) {
      if (!column.nullable && (column.default === undefined || column.default === null) && !column.generated) {
        problems.push(`${table}.${name}: NOT NULL without a default, but no entity property maps it (inserts through the entity fail)`);
      }
    }
  }
  return problems;
}

function describe(c: { type: string; nullable?: boolean }): string {
  return `${c.type}${c.nullable ? " null" : " not null"}`;
}
