export {
  type ConnectAuth,
  type ConnectorSpec,
  connectAuth,
  connectorSpec,
  registerConnector,
} from "./connector.ts";
export { type PruneOptions, type PruneResult, pruneOutbox } from "./prune.ts";
