-- Runs once when the compose Postgres volume is created; the roles and schema come from `npm run migrate`.
CREATE DATABASE registry;
