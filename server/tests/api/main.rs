//! The server's one integration test binary. Each test boots the real app (see `helpers`).
//! Run against SQLite by default and against PostgreSQL with `DATABASE_URL=postgres://...`.
mod helpers;

mod assets;
mod auth;
mod authority;
mod builds;
mod contract;
mod durability;
mod egress;
mod engine;
mod fuzz;
mod limits;
mod lists;
mod migrations;
mod nul;
mod operations;
mod pages;
mod providers;
mod retention;
mod secrets;
mod smoke;
mod temporal;
mod unreadable;
mod web_security;
mod workflow_runs;
mod workflows;
