export {
  type ConnectAuth,
  type ConnectorSpec,
  connectAuth,
  connectorSpec,
  registerConnector,
} from "./connector.ts";
