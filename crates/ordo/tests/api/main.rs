//! API tests: the real service on port 0, one test binary (zero-to-production style).
//!
//! The same tests run on every store combination: see `helpers::store_args`.

mod access;
mod admin;
mod cli;
mod commands;
mod concurrency;
mod durability;
mod faults;
mod hostile;
mod limits;
mod openapi;
mod outage;
mod overload;
mod privacy;
mod queries;
mod raw;
mod roles;
mod rollback;
mod scale_out;
mod stream;
mod supervision;
mod web;

mod helpers;
mod served;
