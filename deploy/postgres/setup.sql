-- One database and one role for the quiz cluster; the nodes and routers migrate the schema
-- themselves on start (store/migrations/postgres).
CREATE ROLE quiz LOGIN PASSWORD 'change-me';
CREATE DATABASE quiz OWNER quiz;
