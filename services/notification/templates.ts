/**
 * Email templates: rendering with handlebars (Mustache syntax, HTML escaping in
 * body_html; subject and body_text are plain text, never escaped), the checks a
 * template passes before it is saved (it parses, declares what it uses, and
 * renders with its examples), admin CRUD and PreviewEmailTemplate.
 */
import { fromJson, type JsonValue, toJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import Handlebars from "handlebars";
import { v7 as uuidv7 } from "uuid";
import type {
  CreateEmailTemplateRequest,
  EmailTemplate,
  ListEmailTemplatesRequest,
  ListEmailTemplatesResponse,
  PreviewEmailTemplateRequest,
  PreviewEmailTemplateResponse,
  TemplateVariable,
  UpdateEmailTemplateRequest,
} from "../../gen/ecommerce/notification/v1/notification_pb.js";
import { timestampOf } from "../../kit/convert.ts";
import type { EntityManager } from "../../kit/db.ts";
import { Code, domainError, failedPrecondition, notFound } from "../../kit/errors.ts";
import { pageOf } from "../../kit/paging.ts";
import { flushUnique, sqlOf } from "../../kit/sql.ts";
import { builtinNames, defaultTemplates } from "./defaults.ts";
import { EmailTemplateEntity, type EmailTemplateRow, type StoredVariable } from "./entities.ts";

type Out<T> = Omit<T, "$typeName">;
export type Vars = Record<string, unknown>;

const hbs = Handlebars.create();
const redacted = "[redacted]";
const maxVariablesBytes = 64 * 1024;

export interface TemplateParts {
  subject: string;
  bodyHtml: string;
  bodyText: string;
  variables: StoredVariable[];
}

export interface Rendered {
  subject: string;
  html: string;
  text: string;
}

const parts = ["subject", "body_html", "body_text"] as const;
type Part = (typeof parts)[number];
const sourceOf = (t: TemplateParts, part: Part) => (part === "subject" ? t.subject : part === "body_html" ? t.bodyHtml : t.bodyText);

function syntaxError(part: Part, message: string): Error {
  const line = /line (\d+)/.exec(message)?.[1] ?? /- (\d+):\d+/.exec(message)?.[1] ?? "1";
  return domainError(Code.InvalidArgument, `${part} does not render: ${message.split("\n")[0]}`, {
    reason: "TEMPLATE_SYNTAX_ERROR",
    field: part,
    metadata: { part, line },
  });
}

/** Top-level names a template part reads (outside sections, plus the sections' own names). */
function topLevelNames(node: hbs.AST.Program): Set<string> {
  const names = new Set<string>();
  const path = (p: hbs.AST.Expression | undefined) => {
    const e = p as hbs.AST.PathExpression | undefined;
    if (e?.type === "PathExpression" && !e.data && e.depth === 0 && e.parts.length > 0) names.add(e.parts[0]!);
  };
  for (const s of node.body) {
    if (s.type === "MustacheStatement") {
      const m = s as hbs.AST.MustacheStatement;
      if (m.params.length === 0) path(m.path);
      else for (const p of m.params) path(p);
    } else if (s.type === "BlockStatement") {
      const b = s as hbs.AST.BlockStatement;
      if (b.params.length === 0) path(b.path);
      else for (const p of b.params) path(p);
    }
  }
  return names;
}

/** Refuses a template that does not parse, uses undeclared names, or does not render with its examples. */
export function checkTemplate(t: TemplateParts): void {
  const declared = new Set(t.variables.map((v) => v.name));
  for (const part of parts) {
    let ast: hbs.AST.Program;
    try {
      ast = hbs.parse(sourceOf(t, part));
    } catch (error) {
      throw syntaxError(part, (error as Error).message);
    }
    for (const name of topLevelNames(ast)) {
      if (!declared.has(name))
        throw domainError(Code.InvalidArgument, `${part} uses "${name}", which is not among the template's variables`, {
          reason: "UNDECLARED_TEMPLATE_VARIABLE",
          field: part,
          metadata: { name, part },
        });
    }
  }
  const sample = Object.fromEntries(t.variables.map((v) => [v.name, v.example ?? ""]));
  for (const part of parts) {
    try {
      renderPart(sourceOf(t, part), sample, part === "body_html");
    } catch (error) {
      throw syntaxError(part, (error as Error).message);
    }
  }
}

function renderPart(source: string, vars: Vars, html: boolean): string {
  if (source === "") return "";
  // compat: names inside a section are looked up the context stack up, as Mustache does ({{#discount}}{{discount}}{{/discount}}).
  return hbs.compile(source, { noEscape: !html, strict: false, compat: true })(vars);
}

/** Renders every part; names missing from `vars` take nothing (sending checks required ones first). */
export function render(t: TemplateParts, vars: Vars): Rendered {
  return { subject: renderPart(t.subject, vars, false).replace(/[\r\n]+/g, " "), html: renderPart(t.bodyHtml, vars, true), text: renderPart(t.bodyText, vars, false) };
}

/** The same rendering with every sensitive value replaced by "[redacted]": what is stored. */
export function renderRedacted(t: TemplateParts, vars: Vars): Rendered {
  const masked = { ...vars };
  for (const v of t.variables) if (v.sensitive && v.name in masked) masked[v.name] = redacted;
  return render(t, masked);
}

export function missingRequired(t: TemplateParts, vars: Vars): string[] {
  return t.variables.filter((v) => v.required && (vars[v.name] === undefined || vars[v.name] === null || vars[v.name] === "")).map((v) => v.name);
}

export function checkVariablesSize(vars: Vars | undefined, field = "variables"): void {
  if (vars && Buffer.byteLength(JSON.stringify(vars)) > maxVariablesBytes)
    throw domainError(Code.InvalidArgument, "more than 64 KiB of variables", { reason: "VARIABLES_TOO_LARGE", field });
}

// --- rows and messages ---

const storedVariables = (vars: TemplateVariable[]): StoredVariable[] =>
  vars.map((v) => ({
    name: v.name,
    description: v.description,
    required: v.required,
    sensitive: v.sensitive,
    ...(v.example ? { example: toJson(ValueSchema, v.example) } : {}),
  }));

const contractVariables = (vars: StoredVariable[]) =>
  vars.map((v) => ({
    name: v.name,
    description: v.description,
    required: v.required,
    sensitive: v.sensitive,
    example: v.example === undefined ? undefined : fromJson(ValueSchema, v.example as JsonValue),
  }));

export function templateMessage(row: EmailTemplateRow): Out<EmailTemplate> {
  return {
    id: row.id,
    name: row.name,
    subject: row.subject,
    bodyHtml: row.bodyHtml,
    bodyText: row.bodyText,
    variables: contractVariables(row.variables) as EmailTemplate["variables"],
    isActive: row.isActive,
    createdAt: timestampOf(row.createdAt),
    updatedAt: timestampOf(row.updatedAt),
  };
}

/** Inserts the built-in templates that are missing; never overwrites an admin's edits. */
export async function seedDefaultTemplates(em: EntityManager): Promise<void> {
  const db = sqlOf(em);
  for (const t of defaultTemplates) {
    await db.run(
      `insert into email_templates (id, name, subject, body_html, body_text, variables, is_active, is_builtin)
       values ($1, $2, $3, $4, $5, $6::jsonb, true, true) on conflict (name) do nothing`,
      [uuidv7(), t.name, t.subject, t.bodyHtml, t.bodyText, JSON.stringify(t.variables)],
    );
  }
}

/** The template for a flow in the recipient's language (`<name>_<language>`), else the flow's own. */
export async function templateFor(em: EntityManager, name: string, locale: string | null | undefined): Promise<EmailTemplateRow | undefined> {
  const lang = (locale ?? "").toLowerCase().split(/[-_]/)[0] ?? "";
  const names = lang && /^[a-z]{2,3}$/.test(lang) ? [`${name}_${lang}`, name] : [name];
  const rows = await em.find(EmailTemplateEntity, { name: { $in: names } });
  const found = names.map((n) => rows.find((r) => r.name === n)).filter((r): r is EmailTemplateRow => r !== undefined);
  // A deactivated locale variant falls back to the flow's own template; when none is active, the first says so.
  return found.find((r) => r.isActive) ?? found[0];
}

const takenName = () => domainError(Code.AlreadyExists, "a template with this name exists", { reason: "TEMPLATE_NAME_TAKEN", field: "name" });

export async function createEmailTemplate(em: EntityManager, req: CreateEmailTemplateRequest) {
  const variables = storedVariables(req.variables);
  checkTemplate({ subject: req.subject, bodyHtml: req.bodyHtml, bodyText: req.bodyText, variables });
  if (await em.findOne(EmailTemplateEntity, { name: req.name })) throw takenName();
  const now = new Date();
  const row = em.create(EmailTemplateEntity, {
    id: uuidv7(),
    name: req.name,
    subject: req.subject,
    bodyHtml: req.bodyHtml,
    bodyText: req.bodyText,
    variables,
    isActive: req.isActive,
    isBuiltin: false,
    createdAt: now,
    updatedAt: now,
  });
  await flushUnique(em, takenName);
  return { template: templateMessage(row) };
}

export async function updateEmailTemplate(em: EntityManager, req: UpdateEmailTemplateRequest) {
  const input = req.template!;
  if (!input.id) throw domainError(Code.InvalidArgument, "template.id is required", { field: "template.id" });
  const row = await em.findOne(EmailTemplateEntity, { id: input.id });
  if (!row) throw notFound("email template", input.id);
  const next: TemplateParts & { isActive: boolean } = { subject: row.subject, bodyHtml: row.bodyHtml, bodyText: row.bodyText, variables: row.variables, isActive: row.isActive };
  const paths = req.updateMask?.paths ?? [];
  for (const path of paths) {
    if (path === "subject") next.subject = input.subject;
    else if (path === "body_html") next.bodyHtml = input.bodyHtml;
    else if (path === "body_text") next.bodyText = input.bodyText;
    else if (path === "variables") next.variables = storedVariables(input.variables);
    else if (path === "is_active") next.isActive = input.isActive;
  }
  if (next.subject === "") throw domainError(Code.InvalidArgument, "subject must not be empty", { field: "template.subject" });
  if (next.bodyText === "") throw domainError(Code.InvalidArgument, "body_text must not be empty", { field: "template.body_text" });
  checkTemplate(next);
  Object.assign(row, next, { updatedAt: new Date() });
  await em.flush();
  return { template: templateMessage(row) };
}

export async function getEmailTemplate(em: EntityManager, key: { case: "id" | "name" | undefined; value?: string }) {
  const row = key.case === "id" ? await em.findOne(EmailTemplateEntity, { id: key.value! }) : await em.findOne(EmailTemplateEntity, { name: key.value ?? "" });
  if (!row) throw notFound("email template", key.value ?? "");
  return { template: templateMessage(row) };
}

export async function listEmailTemplates(em: EntityManager, req: ListEmailTemplatesRequest): Promise<Out<ListEmailTemplatesResponse>> {
  const pages = pageOf(req, { n: "text" });
  const params: unknown[] = [];
  const $ = (v: unknown) => (params.push(v), `$${params.length}`);
  const where: string[] = [];
  if (req.activeOnly) where.push("is_active");
  if (pages.after) where.push(`name > ${$(pages.after.n)}`);
  const ids = await sqlOf(em).all<{ id: string; name: string }>(
    `select id, name from email_templates ${where.length ? `where ${where.join(" and ")}` : ""} order by name limit ${$(pages.size + 1)}`,
    params,
  );
  const shown = ids.slice(0, pages.size);
  const rows = await em.find(EmailTemplateEntity, { id: { $in: shown.map((r) => r.id) } }, { orderBy: { name: "asc" } });
  const last = shown[shown.length - 1];
  return { templates: rows.map(templateMessage) as EmailTemplate[], nextPageToken: ids.length > pages.size && last ? pages.next({ n: last.name }) : "" };
}

export async function deleteEmailTemplate(em: EntityManager, id: string): Promise<void> {
  const row = await em.findOne(EmailTemplateEntity, { id });
  if (!row) throw notFound("email template", id);
  if (row.isBuiltin || builtinNames.has(row.name)) throw failedPrecondition("a built-in flow renders this template; deactivate it instead", "TEMPLATE_REQUIRED_BY_FLOW");
  const used = await sqlOf(em).one("select 1 from notifications where template_name = $1 limit 1", [row.name]);
  if (used) throw failedPrecondition("notifications were rendered from this template; deactivate it instead", "TEMPLATE_IN_USE");
  await em.remove(row).flush();
}

export async function previewEmailTemplate(em: EntityManager, req: PreviewEmailTemplateRequest): Promise<Out<PreviewEmailTemplateResponse>> {
  let t: TemplateParts;
  if (req.source.case === "templateName") {
    const row = await em.findOne(EmailTemplateEntity, { name: req.source.value });
    if (!row) throw notFound("email template", req.source.value);
    t = row;
  } else {
    const d = req.source.value!;
    t = { subject: d.subject, bodyHtml: d.bodyHtml, bodyText: d.bodyText, variables: storedVariables(d.variables) };
  }
  checkVariablesSize(req.variables as Vars | undefined);
  const vars: Vars = { ...(req.variables ?? {}) };
  const exampleVariables: string[] = [];
  for (const v of t.variables) {
    if (vars[v.name] === undefined && v.example !== undefined) {
      vars[v.name] = v.example;
      exampleVariables.push(v.name);
    }
  }
  for (const part of parts) {
    try {
      hbs.parse(sourceOf(t, part));
    } catch (error) {
      throw syntaxError(part, (error as Error).message);
    }
  }
  let out: Rendered;
  try {
    out = render(t, vars);
  } catch (error) {
    throw syntaxError("body_text", (error as Error).message);
  }
  return { subject: out.subject, bodyHtml: out.html, bodyText: out.text, missingVariables: missingRequired(t, vars), exampleVariables };
}
