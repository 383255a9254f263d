// The rules live in @crm/auth, shared with the ops console; this module keeps the service's own import path.
export * from "@crm/auth";
