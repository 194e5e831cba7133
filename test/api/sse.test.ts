import { describe } from "bun:test";
import { sseTransport } from "./helpers.ts";
import { runTransportSuite } from "./transport.case.ts";

describe("subscriptions over Server-Sent Events (graphql-sse client)", () => runTransportSuite(sseTransport));
