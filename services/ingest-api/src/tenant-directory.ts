// The directory lives in @crm/auth, shared with the ops console; this module keeps the service's own import path.
export { type BusinessAccess, PgTenantDirectory, type TenantDirectory } from "@crm/auth";
