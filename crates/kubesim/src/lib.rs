//! kubesim: a faithful single-machine stand-in for the parts of the Kubernetes API that
//! redis-k8s-election touches.
//!
//! Fidelity is the point: every behaviour here is the real kube-apiserver's (see
//! `shared/reference/kube-api-subset.md`), because a sidecar tuned against a lenient fake fails
//! in a real cluster. The crate is layered as the rest of the project: pure parts in the middle
//! (selectors, validation, patches, one module per resource kind with its strategy, the API
//! verbs over the [`store::Store`]) and the HTTP edge (the server). What `local`, the test
//! harness and the tests use is public: the [`ApiServer`], the whole [`cluster::Cluster`],
//! its [`controllers`], [`kubelet`] and Service [`proxy`], manifest loading ([`manifest`]),
//! fault injection ([`Fault`]); the rest is internal.

mod api;
pub mod cluster;
pub mod controllers;
mod discovery;
pub mod dns;
mod endpoints;
mod event_convert;
mod faults;
mod kinds;
pub mod kubelet;
pub mod manifest;
mod openapi;
mod patch;
mod podspec;
mod protobuf;
pub mod proxy;
mod rbac;
mod resources;
mod selector;
mod server;
mod statefulset;
mod status;
pub mod store;
mod table;
pub mod tls;
mod util;
mod validation;

pub use faults::{ErrorFault, Fault};
pub use server::{ApiServer, Config, kubeconfig};
pub use status::ApiError;
pub use table::pod_cells;
pub use util::random_token;
