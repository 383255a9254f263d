export { type ConnectorSpec, connectorSpec, registerConnector } from "./connector.ts";
