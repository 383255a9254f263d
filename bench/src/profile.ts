import { readFileSync } from "node:fs";

/*
 * Summary of a V8 .cpuprofile (node --cpu-prof): self time by function and by module (package or file), so a
 * bench report names where a service's CPU went without opening a flame graph. `npm run bench -- profile <file>`.
 */

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}

export interface CpuProfile {
  nodes: ProfileNode[];
  samples?: number[];
  timeDeltas?: number[];
  startTime: number;
  endTime: number;
}

export interface ProfileSummary {
  totalMs: number;
  /** Share of samples that were idle (the process waiting: event loop empty). */
  idleShare: number;
  topFunctions: { name: string; selfShare: number }[];
  topModules: { module: string; selfShare: number }[];
}

/** `node_modules/<pkg>` (scoped too), `node:<builtin>`, a repo path, or the V8 pseudo-frame name. */
export function moduleOf(url: string, functionName: string): string {
  if (!url) return `(${functionName || "native"})`;
  const nm = url.lastIndexOf("node_modules/");
  if (nm >= 0) {
    const parts = url.slice(nm + "node_modules/".length).split("/");
    return parts[0]!.startsWith("@") ? `${parts[0]}/${parts[1]}` : parts[0]!;
  }
  if (url.startsWith("node:")) return url;
  const repo = url.match(/\/(services|packages|bench|schemas|infra)\/.+$/);
  return repo ? repo[0].slice(1) : url;
}

export function summarizeProfile(profile: CpuProfile, top = 12): ProfileSummary {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const selfUs = new Map<number, number>();
  if (profile.samples && profile.timeDeltas) {
    const deltas = profile.timeDeltas;
    profile.samples.forEach((id, i) => {
      selfUs.set(id, (selfUs.get(id) ?? 0) + (deltas[i] ?? 0));
    });
  } else {
    for (const node of profile.nodes) selfUs.set(node.id, node.hitCount ?? 0);
  }
  const total = [...selfUs.values()].reduce((a, b) => a + b, 0) || 1;
  const functions = new Map<string, number>();
  const modules = new Map<string, number>();
  let idle = 0;
  for (const [id, us] of selfUs) {
    const frame = byId.get(id)?.callFrame;
    if (!frame) continue;
    if (frame.functionName === "(idle)") {
      idle += us;
      continue;
    }
    const file = frame.url.split("/").slice(-2).join("/");
    const name = `${frame.functionName || "(anonymous)"} ${file}:${frame.lineNumber + 1}`;
    functions.set(name, (functions.get(name) ?? 0) + us);
    const module = moduleOf(frame.url, frame.functionName);
    modules.set(module, (modules.get(module) ?? 0) + us);
  }
  const busy = total - idle || 1;
  const ranked = (map: Map<string, number>) => [...map.entries()].sort((a, b) => b[1] - a[1]).slice(0, top);
  return {
    totalMs: Math.round(total / 1_000),
    idleShare: Math.round((idle / total) * 1_000) / 1_000,
    // Shares of the busy (non-idle) time.
    topFunctions: ranked(functions).map(([name, us]) => ({
      name,
      selfShare: Math.round((us / busy) * 1_000) / 1_000,
    })),
    topModules: ranked(modules).map(([module, us]) => ({
      module,
      selfShare: Math.round((us / busy) * 1_000) / 1_000,
    })),
  };
}

export function summarizeProfileFile(file: string, top?: number): ProfileSummary {
  return summarizeProfile(JSON.parse(readFileSync(file, "utf8")) as CpuProfile, top);
}
