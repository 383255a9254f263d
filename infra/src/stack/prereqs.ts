import { spawnSync } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { hasCommand, run } from "./proc.ts";

export interface Toolchain {
  /** Java 17+, for Kafka and Connect. */
  java: string;
  /** Java 21+, for Apicurio Registry 3.3 (its classes are Java 21 bytecode); may be the same as `java`. */
  java21: string;
  mvn: string;
  pgBin: string;
}

const APT_PACKAGES = {
  java: "openjdk-17-jre-headless",
  mvn: "maven",
  postgres: "postgresql postgresql-contrib",
};

function javaMajor(java: string): number | undefined {
  const result = spawnSync(java, ["-version"], { encoding: "utf8" });
  const match = /version "(\d+)(?:\.(\d+))?/.exec(`${result.stderr}${result.stdout}`);
  if (!match) return undefined;
  const first = Number(match[1]);
  return first === 1 ? Number(match[2]) : first;
}

/** The first Java of at least `minMajor`: JAVA_HOME, then PATH, then every JDK under /usr/lib/jvm (newest last). */
function findJava(minMajor: number): string | undefined {
  const jvmDir = "/usr/lib/jvm";
  const installed = existsSync(jvmDir)
    ? readdirSync(jvmDir)
        .map((name) => join(jvmDir, name, "bin", "java"))
        .filter((java) => existsSync(java))
    : [];
  const candidates = [
    process.env.STACK_JAVA21_HOME ? join(process.env.STACK_JAVA21_HOME, "bin", "java") : undefined,
    process.env.JAVA_HOME ? join(process.env.JAVA_HOME, "bin", "java") : undefined,
    hasCommand("java") ? "java" : undefined,
    ...installed,
  ];
  for (const java of candidates) {
    if (!java) continue;
    const major = javaMajor(java);
    if (major !== undefined && major >= minMajor) return java;
  }
  return undefined;
}

/** The newest PostgreSQL server bin folder (Debian layout, then PATH), at least version 15. */
function findPgBin(): string | undefined {
  const debian = "/usr/lib/postgresql";
  if (existsSync(debian)) {
    const versions = readdirSync(debian)
      .filter((v) => /^\d+$/.test(v) && Number(v) >= 15 && existsSync(join(debian, v, "bin", "initdb")))
      .sort((a, b) => Number(b) - Number(a));
    if (versions[0]) return join(debian, versions[0], "bin");
  }
  if (hasCommand("pg_config")) {
    const bin = run("pg_config", ["--bindir"]).trim();
    if (existsSync(join(bin, "initdb"))) return bin;
  }
  return undefined;
}

function canApt(): boolean {
  return process.getuid?.() === 0 && hasCommand("apt-get");
}

function aptInstall(packages: string[], log: (line: string) => void): void {
  log(`installing with apt-get: ${packages.join(" ")}`);
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  run("apt-get", ["update", "-q"], { env });
  run(
    "apt-get",
    ["install", "-y", "-q", "--no-install-recommends", ...packages.flatMap((p) => p.split(" "))],
    {
      env,
    },
  );
}

/**
 * Finds Java 17+, Maven and the PostgreSQL server binaries. On Debian/Ubuntu as root the missing ones are
 * installed with apt-get; elsewhere this stops with the exact command to run.
 */
export function ensureToolchain(log: (line: string) => void): Toolchain {
  const missing: string[] = [];
  if (!findJava(17)) missing.push(APT_PACKAGES.java);
  if (!hasCommand("mvn")) missing.push(APT_PACKAGES.mvn);
  if (!findPgBin()) missing.push(APT_PACKAGES.postgres);
  if (missing.length > 0) {
    if (!canApt()) {
      throw new Error(
        `missing prerequisites; install them first:\n  sudo apt-get install -y ${missing.join(" ")}\n` +
          "(or any Java 17+, Maven 3.8+ and PostgreSQL 15+ server on your PATH)",
      );
    }
    aptInstall(missing, log);
  }
  const java = findJava(17);
  const pgBin = findPgBin();
  if (!java || !pgBin || !hasCommand("mvn"))
    throw new Error("prerequisites still missing after apt-get install");
  let java21 = findJava(21);
  if (!java21 && canApt()) {
    // Debian 13 and Ubuntu 24.04 package Java 21; Debian 12 does not, so this may fail and say so below.
    try {
      aptInstall(["openjdk-21-jre-headless"], log);
    } catch {}
    java21 = findJava(21);
  }
  if (!java21) {
    throw new Error(
      "Apicurio Registry 3.3 needs Java 21+, none found (JAVA_HOME, PATH, /usr/lib/jvm).\n" +
        "Install one (e.g. apt-get install openjdk-21-jre-headless, or any JDK 21+) and set STACK_JAVA21_HOME or JAVA_HOME.",
    );
  }
  return { java, java21, mvn: "mvn", pgBin };
}
