//! kubesim: a faithful single-machine stand-in for the parts of the Kubernetes API that
//! redis-k8s-election touches.
//!
//! Fidelity is the point: every behaviour here is the real kube-apiserver's (see
//! `shared/reference/kube-api-subset.md`), because a sidecar tuned against a lenient fake fails
//! in a real cluster. The crate is layered as the rest of the project: pure parts in the middle
//! ([`selector`], [`validation`], [`patch`], [`resources`], [`api`] over the [`store::Store`])
//! and the HTTP edge in [`server`].

pub mod api;
pub mod cluster;
pub mod controllers;
pub mod discovery;
pub mod endpoints;
pub mod event_convert;
pub mod faults;
pub mod kinds;
pub mod kubelet;
pub mod manifest;
pub mod patch;
pub mod podspec;
pub mod protobuf;
pub mod proxy;
pub mod rbac;
pub mod resources;
pub mod selector;
pub mod server;
pub mod statefulset;
pub mod status;
pub mod store;
pub mod table;
pub mod tls;
pub mod util;
pub mod validation;

pub use faults::{ErrorFault, Fault};
pub use server::{ApiServer, Config, kubeconfig};
pub use status::ApiError;
