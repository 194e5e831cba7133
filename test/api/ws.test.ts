import { describe } from "bun:test";
import { wsTransport } from "./helpers.ts";
import { runTransportSuite } from "./transport.case.ts";

describe("subscriptions over WebSocket (graphql-ws client)", () => runTransportSuite(wsTransport));
