import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { SQL_LAYOUT } from "./migrate.ts";

// STYLE "One definition of each thing": versioned migrations hold schema changes only; each database function has
// one current definition, in a repeatable file of infra/sql/, with its grants beside it.
const sqlFiles = (dir: string) =>
  readdirSync(dir)
    .filter((file) => /^\d+_.+\.sql$/.test(file))
    .sort();

/** The statements of a file without its comments, so a comment that names a statement is not one. */
const statements = (dir: string, file: string) =>
  readFileSync(join(dir, file), "utf8")
    .replace(/--.*$/gm, "")
    .replace(/\/\*[\s\S]*?\*\//g, "");

describe("SQL layout", () => {
  it("versioned migrations define no function, procedure, view, trigger or policy", () => {
    const found = sqlFiles(SQL_LAYOUT.migrations).flatMap((file) =>
      [
        ...statements(SQL_LAYOUT.migrations, file).matchAll(
          /\bCREATE\s+(?:OR\s+REPLACE\s+)?(?:FUNCTION|PROCEDURE|(?:MATERIALIZED\s+)?VIEW|TRIGGER|POLICY)\s+[\w.]+/gi,
        ),
      ].map(([statement]) => `${file}: ${statement}`),
    );
    expect(found).toEqual([]);
  });

  it("every function has one definition in infra/sql/, replaceable on every run, with its grants in its file", () => {
    const definedIn = new Map<string, string[]>();
    const problems: string[] = [];
    for (const file of sqlFiles(SQL_LAYOUT.repeatable)) {
      const sql = statements(SQL_LAYOUT.repeatable, file);
      for (const [statement] of sql.matchAll(/\bCREATE\s+(?:TABLE|INDEX|FUNCTION|PROCEDURE)\s+[\w.]+/gi)) {
        problems.push(
          `${file}: "${statement}" (schema goes in a versioned migration; functions are OR REPLACE)`,
        );
      }
      for (const [, name] of sql.matchAll(
        /\bCREATE\s+OR\s+REPLACE\s+(?:FUNCTION|PROCEDURE)\s+([\w.]+)\s*\(/gi,
      )) {
        definedIn.set(name!, [...(definedIn.get(name!) ?? []), file]);
        const grant = new RegExp(
          `\\bGRANT\\s+EXECUTE\\s+ON\\s+FUNCTION\\s[^;]*\\b${name!.replace(".", "\\.")}\\(`,
          "i",
        );
        if (!grant.test(sql)) problems.push(`${file}: ${name} has no GRANT EXECUTE beside it`);
      }
    }
    for (const [name, files] of definedIn) {
      if (files.length > 1) problems.push(`${name} is defined ${files.length} times (${files.join(", ")})`);
    }
    expect(problems).toEqual([]);
    expect([...definedIn.keys()]).toContain("app.resolve_contact");
  });
});
