//! The Portcullis server as a library, so that integration tests boot exactly what the binary
//! runs. `main.rs` is the CLI on top.

pub mod app;
pub mod config;
pub mod demo_crm;
pub mod gateway;
pub mod metrics;
pub mod telemetry;
