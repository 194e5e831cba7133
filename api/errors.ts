/**
 * Errors a client can act on. Each carries a machine-readable `extensions.code` and, for bad
 * input, `extensions.field` naming the input field (dotted path) at fault. Anything else a
 * resolver throws is masked by yoga ("Unexpected error.") and logged.
 */
import { GraphQLError } from "graphql";

export const ErrorCode = Object.freeze({
  BAD_USER_INPUT: "BAD_USER_INPUT",
  NOT_FOUND: "NOT_FOUND",
  QUEUE_FULL: "QUEUE_FULL",
  UNAUTHENTICATED: "UNAUTHENTICATED",
  QUERY_TOO_DEEP: "QUERY_TOO_DEEP",
  QUERY_TOO_COSTLY: "QUERY_TOO_COSTLY",
  NOT_CANCELLABLE: "NOT_CANCELLABLE",
  /** A malformed request (not valid GraphQL-over-HTTP, bad WebSocket message). */
  BAD_REQUEST: "BAD_REQUEST",
  /** A browser request from an origin the operator did not allow. */
  FORBIDDEN: "FORBIDDEN",
  /** A job failed while running; the message is safe to show, the server log has the detail. */
  RUN_FAILED: "RUN_FAILED",
});
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export function apiError(code: ErrorCode, message: string, extra: Record<string, unknown> = {}): GraphQLError {
  return new GraphQLError(message, { extensions: { code, ...extra } });
}

/** A bound or name violation on input field `field` ("input.steps", "config.beta_start"). */
export function badInput(field: string, message: string, extra: Record<string, unknown> = {}): GraphQLError {
  return apiError(ErrorCode.BAD_USER_INPUT, `${field}: ${message}`, { field, ...extra });
}
