//! Integration tests over HTTP against the real server, on the backend named by
//! PORTCULLIS_TEST_DATABASE (`sqlite`, the default, or `postgres`). `.ci/run` runs the suite
//! once per backend.

mod admin;
mod authorize;
mod cimd;
mod cli;
mod cluster;
mod dashboard;
mod e2e;
mod exchange;
mod gateway;
mod harness;
mod metadata;
mod observability;
mod pages;
mod peers;
mod registration;
mod sso;
mod token;
mod vault;
