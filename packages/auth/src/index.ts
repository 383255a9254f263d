// Who a caller is (SPEC 4 "Authentication" and "Tenant check"): the bearer credential's rules and the directory of
// which businesses a user or ingest key may act for. Shared by ingest-api and the ops console, so both verify a
// user token the same way.
export * from "./authenticator.ts";
export * from "./tenant-directory.ts";
