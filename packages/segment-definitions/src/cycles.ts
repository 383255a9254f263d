/**
 * A chain of segment references that leads from `start` back to it (`[start, ..., start]`), or undefined when
 * there is none. `references(id)` gives the segments a definition names. Iterative depth-first search: a chain as
 * long as a business has segments cannot overflow the stack.
 */
export function findCycle(
  start: string,
  references: (id: string) => readonly string[],
): string[] | undefined {
  const done = new Set<string>();
  const onPath = new Set<string>([start]);
  const path: string[] = [start];
  const pending: Array<{ next: readonly string[]; index: number }> = [{ next: references(start), index: 0 }];
  while (pending.length > 0) {
    const top = pending.at(-1)!;
    if (top.index >= top.next.length) {
      pending.pop();
      const left = path.pop()!;
      onPath.delete(left);
      done.add(left);
      continue;
    }
    const id = top.next[top.index++]!;
    if (id === start || onPath.has(id)) return [...path.slice(path.indexOf(id)), id];
    if (done.has(id)) continue;
    onPath.add(id);
    path.push(id);
    pending.push({ next: references(id), index: 0 });
  }
  return undefined;
}
