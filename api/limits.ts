/**
 * Query depth and cost limits as one GraphQL validation rule, so an expensive query is refused
 * before anything executes. Depth counts every field, introspection included; cost counts one per
 * non-introspection field, multiplied by the page size of the list
 * fields above it (`first`, or the largest page when `first` is a variable).
 */
import {
  GraphQLError,
  Kind,
  type ASTVisitor,
  type FragmentDefinitionNode,
  type SelectionSetNode,
  type ValidationContext,
} from "graphql";
import { ErrorCode } from "./errors.ts";

export interface QueryLimits {
  readonly maxDepth: number;
  readonly maxCost: number;
  /** Page size assumed when a list field's `first` is a variable or left out. */
  readonly defaultPage: number;
}

export function queryLimitsRule(limits: QueryLimits) {
  return (context: ValidationContext): ASTVisitor => {
    const fragments = new Map<string, FragmentDefinitionNode>();
    for (const d of context.getDocument().definitions) if (d.kind === Kind.FRAGMENT_DEFINITION) fragments.set(d.name.value, d);

    const walk = (set: SelectionSetNode, depth: number, mult: number, seen: Set<string>): { depth: number; cost: number } => {
      let maxDepth = depth;
      let cost = 0;
      for (const sel of set.selections) {
        if (sel.kind === Kind.FIELD) {
          // Introspection counts toward depth (its types recurse), not toward cost.
          if (!sel.name.value.startsWith("__")) cost += mult;
          if (sel.selectionSet) {
            const first = sel.arguments?.find((a) => a.name.value === "first");
            const page = first?.value.kind === Kind.INT ? Number(first.value.value) : sel.name.value === "jobs" ? limits.defaultPage : 1;
            const r = walk(sel.selectionSet, depth + 1, mult * Math.max(1, page), seen);
            maxDepth = Math.max(maxDepth, r.depth);
            cost += r.cost;
          }
        } else if (sel.kind === Kind.INLINE_FRAGMENT) {
          const r = walk(sel.selectionSet, depth, mult, seen);
          maxDepth = Math.max(maxDepth, r.depth);
          cost += r.cost;
        } else {
          const name = sel.name.value;
          const frag = fragments.get(name);
          if (!frag || seen.has(name)) continue; // unknown or cyclic fragments are other rules' errors
          const r = walk(frag.selectionSet, depth, mult, new Set([...seen, name]));
          maxDepth = Math.max(maxDepth, r.depth);
          cost += r.cost;
        }
      }
      return { depth: maxDepth, cost };
    };

    return {
      OperationDefinition(node) {
        const { depth, cost } = walk(node.selectionSet, 1, 1, new Set());
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
      },
    };
  };
}
