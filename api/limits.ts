/**
 * Query limits as GraphQL validation rules, so an expensive query is refused before anything
 * executes:
 * - depth counts every field, introspection included;
 * - cost counts one per non-introspection field, multiplied by the page size of the list fields
 *   above it (`first`, or the largest page when `first` is a variable);
 * - an operation's root fields are bounded (a mutation with 1,000 aliased `generate` fields would
 *   otherwise queue 1,000 jobs in one request).
 *
 * Each fragment is measured once and its figures reused at every spread: cost is linear in the
 * multiplier above a spread and depth adds to it, so a fragment's (depth, unit cost) pair is all a
 * spread needs. Re-walking fragments at each spread costs 2ⁿ for n fragments that each spread the
 * next twice (a 1 KB query froze the event loop for 35 s at n = 24).
 */
import { GraphQLError, Kind, type ASTVisitor, type FragmentDefinitionNode, type SelectionSetNode, type ValidationContext } from "graphql";
import { ErrorCode } from "./errors.ts";

export interface QueryLimits {
  readonly maxDepth: number;
  readonly maxCost: number;
  /** Page size assumed when a list field's `first` is a variable or left out. */
  readonly defaultPage: number;
  /** Most root fields (aliases included) in one operation. */
  readonly maxRootFields: number;
}

interface Measure {
  /** Depth below the selection set's own level (0 for a set of leaves). */
  readonly depth: number;
  /** Cost at multiplier 1. */
  readonly cost: number;
}

export function queryLimitsRule(limits: QueryLimits) {
  return (context: ValidationContext): ASTVisitor => {
    const fragments = new Map<string, FragmentDefinitionNode>();
    for (const d of context.getDocument().definitions) if (d.kind === Kind.FRAGMENT_DEFINITION) fragments.set(d.name.value, d);
    const measured = new Map<string, Measure>();
    const inProgress = new Set<string>();

    const fragment = (name: string): Measure => {
      const done = measured.get(name);
      if (done) return done;
      const frag = fragments.get(name);
      // Unknown or cyclic fragments are other rules' errors; they add nothing here.
      if (!frag || inProgress.has(name)) return { depth: 0, cost: 0 };
      inProgress.add(name);
      const m = measure(frag.selectionSet);
      inProgress.delete(name);
      measured.set(name, m);
      return m;
    };

    // Costs can exceed 2^53 with nested pages; they are compared, never used as counts, so a float suffices.
    const measure = (set: SelectionSetNode): Measure => {
      let depth = 0;
      let cost = 0;
      for (const sel of set.selections) {
        if (sel.kind === Kind.FIELD) {
          if (!sel.name.value.startsWith("__")) cost += 1; // introspection counts toward depth only
          if (sel.selectionSet) {
            const first = sel.arguments?.find((a) => a.name.value === "first");
            const page = first?.value.kind === Kind.INT ? Number(first.value.value) : sel.name.value === "jobs" ? limits.defaultPage : 1;
            const r = measure(sel.selectionSet);
            depth = Math.max(depth, r.depth + 1);
            cost += Math.max(1, page) * r.cost;
          }
        } else {
          const r = sel.kind === Kind.INLINE_FRAGMENT ? measure(sel.selectionSet) : fragment(sel.name.value);
          depth = Math.max(depth, r.depth);
          cost += r.cost;
        }
      }
      return { depth, cost };
    };

    /** Root fields of an operation, through its fragments (each counted once per spread). */
    const rootFields = (set: SelectionSetNode, seen: ReadonlySet<string>): number => {
      let n = 0;
      for (const sel of set.selections) {
        if (sel.kind === Kind.FIELD) n++;
        else if (sel.kind === Kind.INLINE_FRAGMENT) n += rootFields(sel.selectionSet, seen);
        else {
          const frag = fragments.get(sel.name.value);
          if (frag && !seen.has(frag.name.value)) n += rootFields(frag.selectionSet, new Set([...seen, frag.name.value]));
        }
        if (n > limits.maxRootFields) return n; // enough to refuse; stop before any blow-up
      }
      return n;
    };

    return {
      OperationDefinition(node) {
        const { depth: below, cost } = measure(node.selectionSet);
        const depth = below + 1;
        if (depth > limits.maxDepth) {
          context.reportError(
            new GraphQLError(`query depth ${depth} exceeds the limit of ${limits.maxDepth}`, {
              nodes: [node],
              extensions: { code: ErrorCode.QUERY_TOO_DEEP, depth, limit: limits.maxDepth },
            }),
          );
        }
        if (cost > limits.maxCost) {
          context.reportError(
            new GraphQLError(`query cost ${cost} exceeds the limit of ${limits.maxCost} (cost: one per field, times the page size of lists above it)`, {
              nodes: [node],
              extensions: { code: ErrorCode.QUERY_TOO_COSTLY, cost, limit: limits.maxCost },
            }),
          );
        }
        const roots = rootFields(node.selectionSet, new Set());
        if (roots > limits.maxRootFields) {
          context.reportError(
            new GraphQLError(`an operation may select at most ${limits.maxRootFields} root fields (aliases included); this one selects more`, {
              nodes: [node],
              extensions: { code: ErrorCode.QUERY_TOO_COSTLY, rootFields: roots, limit: limits.maxRootFields },
            }),
          );
        }
      },
    };
  };
}
